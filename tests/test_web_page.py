"""The click-to-cut page at `/`, driven in Debian's headless Chromium by Playwright against the real Ray Serve
app: upload, two clicks (keep, then exclude by right-click), the overlay changes, the PNG download is RGBA at
the photo's size, a refusal shows the server's message, the page fits a phone's width, and with API keys on it
sends the key typed into its field.

Screenshots land in test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from images import png

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Playwright's own browser download cannot work here: Debian's Chromium, headless, with nothing that phones
# home. --user-data-dir comes from launch_persistent_context (a fresh folder per test). /dev/shm is small in
# containers: Chromium then uses /tmp instead of crashing.
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 120_000  # a new photo's embedding takes seconds on a CPU shared with other tests


@pytest.fixture()
def browser_page(tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: apt-get install -y chromium (make test does it)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            accept_downloads=True, viewport={"width": 1000, "height": 860})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        console_errors: list[str] = []
        page.on("pageerror", lambda exc: console_errors.append(str(exc)))
        try:
            yield page, console_errors
        finally:
            context.close()


def overlay_state(page) -> dict:
    return page.evaluate("""() => {
        const c = document.getElementById('overlay');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let covered = 0;  // pixels inside SAM's mask (mask >= 128, drawn at 55% opacity)
        for (let i = 3; i < data.length; i += 4) if (data[i] >= 70) covered++;
        return {version: Number(c.dataset.version), url: c.toDataURL(), covered, pixels: c.width * c.height};
    }""")


def click_photo(page, fx: float, fy: float, button: str = "left") -> None:
    box = page.locator("#photo").bounding_box()
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, button=button)


def wait_for_mask(page, after_version: int, clicks: int) -> dict:
    page.wait_for_function(
        "([v, n]) => Number(document.getElementById('overlay').dataset.version) > v"
        " && document.getElementById('status').textContent.startsWith(n + ' click')", arg=[after_version, clicks])
    return overlay_state(page)


def test_page_uploads_clicks_shows_the_mask_and_downloads_the_cutout(sharp_app_url, browser_page, tmp_path):
    """On the test checkpoint random-sharp (conftest.SHARP_ARGS): a click keeps a blob around it, so the tint, the
    exclude click and the download have something to show."""
    import json

    import numpy as np

    from images import decode, real_mask

    app_url = sharp_app_url
    page, console_errors = browser_page
    width, height = 480, 360
    photo_path = tmp_path / "photo.png"
    photo_path.write_bytes(png(width, height, seed=5))

    page.goto(app_url + "/")
    assert page.title() == "background-remover"
    page.set_input_files("#file", str(photo_path))
    page.wait_for_function("document.getElementById('stage').dataset.imageId")
    assert page.locator("#alert").is_hidden()

    empty = overlay_state(page)
    click_photo(page, 0.5, 0.5)
    first = wait_for_mask(page, empty["version"], 1)
    assert 0 < first["covered"] < first["pixels"], "the first click drew no mask over the photo"

    click_photo(page, 0.6, 0.55, button="right")  # right-click: an exclude point, on the kept blob's edge
    second = wait_for_mask(page, first["version"], 2)
    assert second["url"] != first["url"], "the overlay did not change with the second click"
    assert 0 < second["covered"] < first["covered"], "the exclude click did not take part of the tint away"
    assert page.locator("#markers .keep").count() == 1 and page.locator("#markers .exclude").count() == 1
    page.screenshot(path=str(ARTIFACTS / "web-page.png"))

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "photo-cutout.png"
    image = Image.open(download.path())
    image.load()
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (width, height))
    # The download is the cut-out of the page's two clicks: its alpha is the service's mask for them.
    alpha = np.asarray(image.getchannel("A"))
    real_mask(alpha)
    clicks = page.evaluate("[state.imageId, state.points, state.labels]")
    mask = httpx.post(app_url + "/v1/cutout", timeout=120, data={
        "image_id": clicks[0], "points": json.dumps(clicks[1]), "labels": json.dumps(clicks[2]), "mask_only": "true"})
    assert mask.status_code == 200, mask.text
    assert clicks[2] == [1, 0] and np.array_equal(alpha, np.asarray(decode(mask.content)))

    # Undo takes the exclude click back: the overlay returns to the first click's mask.
    page.click("#undo")
    third = wait_for_mask(page, second["version"], 1)
    assert third["url"] == first["url"]

    # Before / after: the original alone, then the cut-out on the checkerboard.
    page.click("#view-before")
    assert page.locator("#overlay").is_hidden() and page.locator("#photo").is_visible()
    page.click("#view-after")
    assert page.locator("#cutout").is_visible() and "checker" in page.locator("#stage").get_attribute("class")
    page.screenshot(path=str(ARTIFACTS / "web-page-after.png"))
    assert console_errors == []


def test_page_draws_each_click_from_the_preview_and_matches_the_full_size_mask(app_url, browser_page, tmp_path):
    """Each click asks for the preview (SAM's 256x256 grid, no postprocess hop); the page upsamples it over the
    photo (shown at its own size here, so canvas pixels are photo pixels) and its mask must be the server's
    full-size mask-only answer for the same clicks: IoU >= 0.99 (PREVIEW_MIN_IOU)."""
    import json

    import numpy as np

    from images import decode
    from parity import PREVIEW_MIN_IOU, iou

    page, console_errors = browser_page
    width, height = 480, 360
    photo_path = tmp_path / "photo.png"
    photo_path.write_bytes(png(width, height, seed=7))
    page.goto(app_url + "/")
    page.set_input_files("#file", str(photo_path))
    page.wait_for_function("document.getElementById('stage').dataset.imageId")
    bodies: list[str] = []
    page.on("request", lambda request: bodies.append(request.post_data or "") if "v1/cutout" in request.url else None)
    version = overlay_state(page)["version"]
    for clicks, (fx, fy, button) in enumerate([(0.5, 0.5, "left"), (0.2, 0.25, "right")], start=1):
        click_photo(page, fx, fy, button=button)
        version = wait_for_mask(page, version, clicks)["version"]
        drawn = page.evaluate("""() => {
            const c = maskToAlpha(state.mask);
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const alpha = [];
            for (let i = 3; i < data.length; i += 4) alpha.push(data[i]);
            return {width: c.width, height: c.height, alpha, points: state.points, labels: state.labels,
                    imageId: state.imageId};
        }""")
        assert (drawn["width"], drawn["height"]) == (width, height), "the photo is not shown at its own size"
        assert 'name="preview"' in bodies[-1], "the page did not ask for the preview"
        full = httpx.post(app_url + "/v1/cutout", timeout=120, data={
            "image_id": drawn["imageId"], "points": json.dumps(drawn["points"]),
            "labels": json.dumps(drawn["labels"]), "mask_only": "true"})
        assert full.status_code == 200, full.text
        expected = np.asarray(decode(full.content)) >= 128
        ours = np.array(drawn["alpha"], np.uint8).reshape(height, width) >= 128
        assert 0 < expected.sum() < expected.size
        score = iou(ours, expected)
        print(f"[web page] click {clicks}: the page's mask against the full-size one, IoU {score:.4f}")
        assert score >= PREVIEW_MIN_IOU, f"click {clicks}: IoU {score:.4f} against the full-size mask"
    assert console_errors == []


def test_page_shows_the_servers_message_when_it_refuses(app_url, browser_page, tmp_path):
    page, _ = browser_page
    fake = tmp_path / "holiday.jpg"  # looks like a photo to the browser, is not one
    fake.write_bytes(b"%PDF-1.4 this is not an image")
    expected = httpx.post(app_url + "/v1/images", files={"image": ("holiday.jpg", fake.read_bytes(), "image/jpeg")},
                          timeout=60).json()["error"]["message"]

    page.goto(app_url + "/")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#alert:not([hidden])")
    assert page.locator("#alert").inner_text() == expected
    assert page.locator("#drop").is_visible()  # back to choosing a photo


def test_page_fits_a_phone(app_url, browser_page, tmp_path):
    page, _ = browser_page
    page.set_viewport_size({"width": 375, "height": 740})
    photo_path = tmp_path / "wide.png"
    photo_path.write_bytes(png(1200, 800, seed=6))
    page.goto(app_url + "/")
    page.set_input_files("#file", str(photo_path))
    page.wait_for_function("document.getElementById('stage').dataset.imageId")
    before = overlay_state(page)
    page.click("#mode-exclude")
    page.click("#mode-keep")  # the touch toggle, back to keep
    click_photo(page, 0.5, 0.5)
    wait_for_mask(page, before["version"], 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, "the page scrolls sideways on a phone"
    photo_box = page.locator("#photo").bounding_box()
    assert photo_box["width"] <= 375
    page.screenshot(path=str(ARTIFACTS / "web-page-phone.png"), full_page=True)


def test_page_sends_the_api_key_from_its_field_when_keys_are_on(keyed_app_url, browser_page, tmp_path):
    """With keys on, the page asks for one (the 401's message, the key field opened), keeps what is typed in this
    tab's session storage (a reload keeps it, local storage stays empty) and sends it as Authorization: Bearer."""
    from conftest import API_KEYS

    page, console_errors = browser_page
    photo_path = tmp_path / "photo.png"
    photo_path.write_bytes(png(320, 240, seed=8))
    page.goto(keyed_app_url + "/")  # under a route prefix: the page's relative URLs go to this app
    assert page.locator("#key-panel").get_attribute("open") is None
    page.set_input_files("#file", str(photo_path))
    page.wait_for_selector("#alert:not([hidden])")
    assert "API key" in page.locator("#alert").inner_text()  # the server's 401 message
    assert page.locator("#key-panel").get_attribute("open") is not None and page.locator("#api-key").is_visible()

    sent = []
    page.on("request", lambda request: sent.append(request.headers.get("authorization")) if "/v1/" in request.url
            else None)
    page.fill("#api-key", API_KEYS[0])
    page.reload()  # the key outlives a reload of this tab
    assert page.input_value("#api-key") == API_KEYS[0]
    assert page.evaluate("[sessionStorage.getItem('bgremove.apiKey'), localStorage.length]") == [API_KEYS[0], 0]
    page.set_input_files("#file", str(photo_path))
    page.wait_for_function("document.getElementById('stage').dataset.imageId")
    before = overlay_state(page)
    click_photo(page, 0.5, 0.5)
    first = wait_for_mask(page, before["version"], 1)
    assert 0 < first["covered"] < first["pixels"]
    assert page.locator("#alert").is_hidden()
    assert sent and all(value == f"Bearer {API_KEYS[0]}" for value in sent), sent
    assert console_errors == []


def test_page_and_assets_are_served(app_url):
    page = httpx.get(app_url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="static/app.js"' in page.text
    script = httpx.get(app_url + "/static/app.js", timeout=30)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "/v1/cutout" in script.text
