"""/docs (Swagger UI) and /redoc (ReDoc) render the API's operations with every request that leaves this machine
blocked, as in an air-gapped cluster: their scripts and styles come from the service itself (fastapi-offline), and
neither page asks anything of another host. Debian's Chromium through Playwright, against the real graph."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from test_web_page import ARTIFACTS, browser_page  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

OPERATIONS = ("/background-removal/remove", "/v1/cutout", "/v1/images")
# ReDoc's "API docs by Redocly" footer shows an image from Redocly's CDN; blocked, the footer just lacks it.
REDOC_FOOTER_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def offline(page) -> list[str]:
    """Aborts every request to a host other than this machine; returns the list of those it aborted."""
    blocked: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if urlsplit(url).hostname in ("127.0.0.1", "localhost") or url.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    page.route("**/*", route)
    return blocked


def test_swagger_ui_renders_the_operations_offline(app_url, browser_page):  # noqa: F811
    page, errors = browser_page
    blocked = offline(page)
    page.goto(app_url + "/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    page.screenshot(path=str(ARTIFACTS / "api-docs-swagger.png"), full_page=True)
    assert set(OPERATIONS) <= {p.strip().replace("\u200b", "") for p in paths}, paths
    assert blocked == [] and errors == [], (blocked, errors)


def test_redoc_renders_the_operations_offline(app_url, browser_page):  # noqa: F811
    page, errors = browser_page
    blocked = offline(page)
    page.goto(app_url + "/redoc")
    page.wait_for_selector("text=Cut out an object")  # an operation's summary, drawn from /openapi.json
    page.screenshot(path=str(ARTIFACTS / "api-docs-redoc.png"), full_page=False)
    text = page.inner_text("body")
    for summary in ("Cut out the clicked object", "Cut out an object", "Upload once, click many"):
        assert summary in text, summary
    assert set(blocked) <= {REDOC_FOOTER_LOGO} and errors == [], (blocked, errors)
