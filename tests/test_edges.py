"""The cut-out's edge (deployments/edges.py, deployments/matting.py) and its benchmark (serve_app/edge_quality):
the contract of cutout_edge, SAM's mask kept exactly on the plain path, colours that never touch alpha, the
torch solver against pymatting, the improvement on report-half photos, the replica's warm-up, and the
option through the Postprocessor, HTTP (a 25 MP photo included) and the CLI."""

import json
from dataclasses import replace

import cv2
import httpx
import numpy as np
import pytest
import torch

from deployments import edge_refine, edges
from deployments import edge_colours
from deployments.edge_colour_kernels import finish_soft_pixels
from deployments.edge_grid import sample_at
from deployments.edges import DEFAULT_SETTINGS, cutout_edge, unknown_band, upsample_logits
from deployments.matting import solve_alpha
from deployments.messages import OutputOptions, SegmentResult
from deployments.output_options import parse_output_options
from deployments.postprocess import Postprocessor
from serve_app import edge_quality
from serve_app.cli import main as cli_main
from serve_app.edge_quality import metrics
from serve_app.edge_quality.synthetic import REPORT_SEEDS, TUNING_SEEDS, make_sample, sample_set

from images import decode


@pytest.fixture(scope="module")
def sample():
    """One report-half photo (1 MP, hair, thin limbs, holes, a soft stretch) with SAM-like logits."""
    return make_sample(REPORT_SEEDS[0], 1152, 864)


@pytest.mark.parametrize("refine", [False, True])
def test_cutout_edge_contract(sample, refine):
    alpha, colours = cutout_edge(sample.rgb, sample.logits, refine)
    assert alpha.shape == sample.alpha.shape and alpha.dtype == np.uint8
    assert colours.shape == sample.rgb.shape and colours.dtype == np.uint8
    inside = (upsample_logits(sample.logits, *alpha.shape) > 0).numpy()
    if not refine:  # SAM's own mask, pixel for pixel: the parity tests compare it with SAM2ImagePredictor's
        assert np.array_equal(alpha >= 128, inside)
    else:  # matting decides the edge band; away from it the mask is SAM's, fully in or out
        band = edge_refine.full_size(edge_refine.working(sample.rgb, sample.logits, DEFAULT_SETTINGS).band,
                                     alpha.shape)
        assert np.array_equal(alpha[~band], np.where(inside[~band], 255, 0))
        assert not np.array_equal(alpha[band] >= 128, inside[band])


@pytest.mark.parametrize("refine", [False, True])
def test_colours_change_only_the_soft_edge_and_never_alpha(sample, refine):
    alpha, colours = cutout_edge(sample.rgb, sample.logits, refine)
    alpha_photo_colours, photo_colours = cutout_edge(sample.rgb, sample.logits, refine,
                                                     settings=replace(DEFAULT_SETTINGS, decontaminate=False))
    assert np.array_equal(alpha, alpha_photo_colours) and photo_colours is sample.rgb
    soft = (alpha > 0) & (alpha < 255)
    assert np.array_equal(colours[~soft], sample.rgb[~soft])
    assert (colours[soft] != sample.rgb[soft]).any(-1).mean() > 0.5


def test_mask_only_skips_colours(sample):
    alpha, colours = cutout_edge(sample.rgb, sample.logits, True, colours=False)
    assert colours is sample.rgb and np.array_equal(alpha, cutout_edge(sample.rgb, sample.logits, True)[0])


def test_band_from_sams_uncertainty_reaches_an_outline_one_cell_off():
    """A disc whose logits are one cell too small all round: the band must hold the true outline."""
    yy, xx = np.mgrid[0:256, 0:256] + 0.5  # cell centres: the photo's centre is at 128 cells
    logits = np.where((xx - 128) ** 2 + (yy - 128) ** 2 < 59 ** 2, 15.0, -15.0).astype(np.float32)
    logits = cv2.GaussianBlur(logits, (0, 0), 0.6)
    band = unknown_band(upsample_logits(logits, 1024, 1024).numpy(), (4.0, 4.0), DEFAULT_SETTINGS)
    fy, fx = np.mgrid[0:1024, 0:1024]
    true_outline = np.abs(np.hypot(fx + 0.5 - 512, fy + 0.5 - 512) - 60 * 4) < 1  # a cell (4 px) further out
    assert band[true_outline].all()
    assert band.mean() < 0.05  # and stays a band, not the whole photo


def test_torch_solver_agrees_with_pymatting():
    from pymatting import estimate_alpha_cf

    rng = np.random.default_rng(0)
    height, width = 70, 90  # more than one 32-pixel tile each way
    image = cv2.GaussianBlur(rng.random((height, width, 3)), (0, 0), 2)
    image = (image - image.min()) / (image.max() - image.min())
    yy, xx = np.mgrid[0:height, 0:width]
    truth = (xx + 3 * np.sin(yy / 4) > 45).astype(float)
    photo = image * truth[..., None] * 0.5 + (1 - truth[..., None]) * image[::-1, ::-1] * 0.8
    trimap = truth.copy()
    trimap[:, 38:52] = 0.5  # the band touches the photo's top and bottom borders
    expected = estimate_alpha_cf(photo, trimap, laplacian_kwargs={"epsilon": 1e-5},
                                 cg_kwargs={"maxiter": 5000, "atol": 1e-12})
    ours = solve_alpha(torch.from_numpy(photo).permute(2, 0, 1).contiguous(), torch.from_numpy(trimap != 0.5),
                       torch.from_numpy(trimap), 1e-5, iterations=2000, tolerance=1e-9).numpy()
    assert np.abs(ours - expected).max() < 1e-5
    assert np.abs(ours - trimap)[trimap == 0.5].mean() > 0.1  # it did solve something


def _soft_alpha_image(rng, shape):
    """An 8-bit alpha with a disc's soft ring, some fully in and out pixels, and a few odd soft specks."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2)
    alpha = np.clip((shape[0] / 3 - r) * 40 + 128, 0, 255).astype(np.uint8)
    specks = rng.random(shape) < 0.01
    alpha[specks] = rng.integers(1, 255, specks.sum())
    return alpha


def colour_pair_system(alpha, weight):
    """The reference: each pixel's subject and background colours (F, B) solve
    [[a^2 + w, a (1 - a)], [a (1 - a), (1 - a)^2 + w]] [F, B] = [a I + w F', (1 - a) I + w B'] (Germer et al.);
    returns the matrix's entries and determinant (a00, a01, a11, det)."""
    a00, a11, a01 = alpha * alpha + weight, (1 - alpha) ** 2 + weight, alpha * (1 - alpha)
    return a00, a01, a11, a00 * a11 - a01 * a01


def test_full_size_colours_solve_the_two_colour_system():
    """The compiled full-size step gives each soft pixel F of the 2x2 system that ``colour_pair_system`` builds
    (its own colour and alpha, its 4-neighbours' weights, the working estimate sampled at the pixel's centre),
    to within one 8-bit level; sure pixels keep the photo's colour."""
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    alpha = _soft_alpha_image(rng, (61, 83))
    estimates = rng.random((17, 23, 6), dtype=np.float32)
    colours = photo.copy()
    finish_soft_pixels(photo, alpha, estimates, colours, 0, alpha.shape[0])
    soft = (alpha > 0) & (alpha < 255)
    rows, cols = np.nonzero(soft)
    sampled = sample_at(torch.from_numpy(estimates).permute(2, 0, 1), rows, cols, alpha.shape).numpy().T
    padded = np.pad(alpha, 1, mode="edge").astype(np.float32)
    a = alpha[rows, cols].astype(np.float32)[:, None]
    w = sum(np.abs(a[:, 0] - padded[rows + 1 + dy, cols + 1 + dx])
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)))[:, None] / 255.0 + 4e-5
    a = a / 255.0
    pixels = photo[rows, cols].astype(np.float32) / 255.0
    _, a01, a11, det = colour_pair_system(a, w)
    r0, r1 = a * pixels + w * sampled[:, :3], (1 - a) * pixels + w * sampled[:, 3:]
    expected = np.round(np.clip((a11 * r0 - a01 * r1) / det, 0, 1) * 255)
    assert np.abs(colours[rows, cols].astype(int) - expected).max() <= 1
    assert np.array_equal(colours[~soft], photo[~soft])


def test_foreground_sweeps_near_the_edge_equal_sweeps_everywhere(sample):
    """Each level's sweeps visit only the pixels within their reach of a soft one: the soft pixels' colours are
    the same as when every pixel is swept (the other pixels cannot reach them), at a fraction of the work."""
    alpha, _ = cutout_edge(sample.rgb, sample.logits, False, colours=False)
    work, work_alpha = edge_colours.working_copy(sample.rgb, alpha, DEFAULT_SETTINGS)
    near = edge_colours.foreground_ml(work, work_alpha, DEFAULT_SETTINGS.colour_iterations)
    everywhere = edge_colours.foreground_ml(work, work_alpha, DEFAULT_SETTINGS.colour_iterations, everywhere=True)
    soft = (work_alpha > 0) & (work_alpha < 255)
    assert soft.mean() < 0.1 and np.abs(near[soft] - everywhere[soft]).max() < 1e-5
    assert not np.allclose(near, everywhere)  # the far pixels really were left alone


def test_colour_cost_follows_the_edge_even_when_sam_is_unsure_everywhere():
    """Random logits near 0 (what random weights give) make the whole photo soft: the working copy shrinks until
    the band it sweeps holds at most ``colour_band_pixels``; every soft pixel still gets an estimated colour,
    the same whether the full-size step runs in one part or split across threads; alpha is untouched."""
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    alpha = edges.soft_alpha(upsample_logits(rng.normal(0, 0.15, (256, 256)).astype(np.float32), 600, 800))
    assert ((alpha > 0) & (alpha < 255)).all()
    settings = DEFAULT_SETTINGS
    work, work_alpha = edge_colours.working_copy(photo, alpha, settings)
    assert work.shape[:2] == work_alpha.shape
    band = edge_colours.sweep_band(work_alpha, settings.colour_iterations)
    assert band.sum() <= settings.colour_band_pixels < alpha.size
    colours = edge_colours.decontaminate(photo, alpha, settings)
    assert (colours != photo).any(-1).mean() > 0.5
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(edge_colours, "FINISH_PIXELS_PER_THREAD", 10**9)
        assert np.array_equal(edge_colours.decontaminate(photo, alpha, settings), colours)


def test_warm_up_compiles_the_colour_kernels_for_read_only_photos_too(sample):
    """Photos from Ray's object store are read-only, which numba compiles separately: after warm_up neither kind of
    photo makes a request compile."""
    edges.warm_up()
    compiled = len(finish_soft_pixels.signatures)
    read_only = sample.rgb.copy()
    read_only.setflags(write=False)
    for photo in (sample.rgb, read_only):
        cutout_edge(photo, sample.logits, False)
    assert len(finish_soft_pixels.signatures) == compiled >= 2


def test_metrics_on_known_cases():
    truth = np.zeros((100, 100))
    truth[20:80, 20:80] = 1.0
    assert metrics.sad(truth, truth) == 0 and metrics.boundary_iou(truth, truth) == 1.0
    assert metrics.gradient_error(truth, truth) == pytest.approx(0, abs=1e-9)
    shifted = np.roll(truth, 5, axis=1)
    assert metrics.sad(shifted, truth) == pytest.approx(2 * 5 * 60 / 1000)
    assert metrics.mse(shifted, truth) == pytest.approx(600 / 10_000 * 1000)
    assert 0 < metrics.boundary_iou(shifted, truth) < 1 and metrics.gradient_error(shifted, truth) > 0
    colours = np.full((100, 100, 3), 200, np.uint8)
    band = metrics.edge_band(truth, 2)
    assert metrics.composite_error(colours, truth, colours, truth, (0, 0, 0), band) == (0.0, 0.0)
    assert metrics.composite_error(colours, shifted, colours, truth, (0, 0, 0), band)[0] > 0


def test_synthetic_logits_look_like_sams_not_like_the_truth(sample):
    """Steep (most cells near +-10..20), and the 0-level outline is off the truth's by a cell or more in places."""
    assert np.mean(np.abs(sample.logits) > 8) > 0.9
    truth_low = cv2.resize(sample.alpha, (256, 256), interpolation=cv2.INTER_AREA) >= 0.5
    wrong = (sample.logits > 0) != truth_low
    assert wrong.sum() > 50  # whole cells off, not a rounding difference
    assert {seed % 2 for seed in REPORT_SEEDS} == {0, 1} and not set(REPORT_SEEDS) & set(TUNING_SEEDS)


def test_colour_estimation_with_the_true_alpha_lowers_the_composite_error():
    """Colours on their own, on two report-half photos: at least 50% lower band composite error than the
    photo's own colours (the issue's bar)."""
    check = edge_quality.colour_check(sample_set(REPORT_SEEDS[:2], edge_quality.QUICK_SIZES))
    assert check["composite_band_estimated_colours"] <= 0.5 * check["composite_band_photo_colours"], check


def test_warm_up_runs_when_the_replica_starts(monkeypatch):
    calls = []
    monkeypatch.setattr("deployments.postprocess.warm_up", lambda: calls.append(1))
    Postprocessor()
    assert calls == [1]


def test_postprocessor_uses_the_edge_and_its_colours(sample):
    seg = SegmentResult("id", sample.logits[None], np.array([0.9]), cache_hit=True)
    post = Postprocessor()
    plain = post.render(seg, sample.rgb, OutputOptions(mask_only=True))
    refined = post.render(seg, sample.rgb, OutputOptions(mask_only=True, refine=True))
    assert "refine" in refined.timings_ms and "refine" not in plain.timings_ms
    assert 0 < refined.timings_ms["refine_mp"] <= sample.megapixels
    expected_alpha, expected_colours = cutout_edge(sample.rgb, sample.logits, True)
    assert np.array_equal(np.asarray(decode(refined.data)), expected_alpha)
    cut = np.asarray(decode(post.render(seg, sample.rgb, OutputOptions(refine=True)).data))
    shown = expected_alpha > 0  # the cut-out carries the estimated colours where it is not transparent
    assert np.array_equal(cut[..., 3], expected_alpha) and np.array_equal(cut[..., :3][shown], expected_colours[shown])


def test_refine_option_is_parsed():
    assert parse_output_options().refine is False
    assert parse_output_options(refine=True).refine is True


def test_improvement_holds_per_size_on_report_half_photos(capsys):
    """Through `bgremove edge-quality --quick`: report-half photos (never used for tuning) at 1 and 12 MP, a studio
    and a cluttered one at each size, the default refined edge with colours against plain upsampling with the
    photo's colours. At each size the mean SAD is at least 25% and the edge band's composite error at least 30%
    lower (the issue's bars), and no photo is worse than plain by more than 2% on either (the guard's fallbacks
    count as what they answer)."""
    assert cli_main(["edge-quality", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out)
    photos = result["report"]["photos"]
    assert [photo["seed"] for photo in photos] == [0, 1, 16, 17]
    assert {(tuple(p["size"]) in ((1152, 864), (4000, 3000)), p["features"][0]) for p in photos} == {
        (True, "studio"), (True, "cluttered")}
    sizes = result["report"]["sizes"]
    assert set(sizes) == {"1", "12"}
    for size, entry in sizes.items():
        best = entry["refined_colours"]
        assert entry["photos"] == 2 and entry["backgrounds"] == ["cluttered", "studio"]
        assert best["sad_vs_plain"] <= -0.25 and best["composite_band_vs_plain"] <= -0.30, (size, best)
        assert best["sad_worse_by_2pc"] == 0 and best["composite_band_worse_by_2pc"] == 0, (size, best)
    table = result["report"]["methods"]
    assert table["plain_colours"]["composite_band"] < table["plain"]["composite_band"]  # colours earn their place


@pytest.mark.e2e
def test_refine_over_http(app_url):
    from images import png

    data = png(640, 480, seed=12)
    fields = {"points": "[[320, 240]]", "mask_only": "true"}
    plain = httpx.post(app_url + "/v1/cutout", files={"image": ("p.png", data, "image/png")}, data=fields, timeout=120)
    refined = httpx.post(app_url + "/v1/cutout", files={"image": ("p.png", data, "image/png")},
                         data={**fields, "refine": "true"}, timeout=120)
    assert plain.status_code == refined.status_code == 200, refined.text
    assert "refine;dur=" in refined.headers["Server-Timing"] and "refine;dur=" not in plain.headers["Server-Timing"]
    assert decode(refined.content).size == (640, 480)


@pytest.mark.e2e
def test_25_megapixel_photo_with_refine(app_url):
    """The largest photo the service takes, refined: an answer within the deadline (matting solved at the scale
    where its band fits the budget, which Server-Timing's refine_mp shows), and the replica still serves
    afterwards."""
    import io

    from PIL import Image

    from images import png

    side = 5000
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    disc = ((xx - 2500) ** 2 + (yy - 2500) ** 2 < 1500 ** 2)[..., None]
    photo = np.where(disc, [200, 120, 60], [40, 90, 160]).astype(np.uint8) + (xx[..., None] / 100).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG", compress_level=1)
    response = httpx.post(app_url + "/v1/cutout", files={"image": ("big.png", buffer.getvalue(), "image/png")},
                          data={"points": "[[2500, 2500]]", "refine": "true"}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert decode(response.content).size == (side, side)
    timing = dict(part.split(";dur=") for part in response.headers["Server-Timing"].split(", ") if ";dur=" in part)
    # the band's budget, not the photo, sets the working size: a disc's outline at 25 MP is worked on at < 2 MP
    assert 0 < float(timing["refine_mp"]) < 2
    after = httpx.post(app_url + "/v1/cutout", files={"image": ("p.png", png(320, 240, seed=5), "image/png")},
                       data={"points": "[[160, 120]]", "refine": "true"}, timeout=120)
    assert after.status_code == 200, after.text


@pytest.mark.e2e
def test_cli_cut_with_refine(app_url, tmp_path):
    from images import png

    photo = tmp_path / "p.png"
    photo.write_bytes(png(320, 240, seed=13))
    out = tmp_path / "cut.png"
    assert cli_main(["cut", str(photo), "--point", "160,120", "--refine", "-o", str(out), "--url", app_url]) == 0
    image = decode(out.read_bytes())
    assert (image.mode, image.size) == ("RGBA", (320, 240))


def test_timing_run_groups_photos_by_size():
    """`bgremove edge-quality --timing`: per size, the photos counted and their CPU time per megapixel."""
    from serve_app.edge_quality.measure import cpu_per_size

    samples = [make_sample(seed, 640, 480) for seed in REPORT_SEEDS[:2]] + [make_sample(REPORT_SEEDS[2], 1632, 1224)]
    sizes = cpu_per_size(samples)
    assert sorted(sizes) == ["1", "2"] and (sizes["1"]["photos"], sizes["2"]["photos"]) == (2, 1)
    assert all(row["cpu_s_per_mp"] > 0 and row["s_per_mp"] > 0 for row in sizes.values())
