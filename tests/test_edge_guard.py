"""The refined edge's working size and guard (deployments/edge_refine.py, deployments/edge_guard.py): the band's
budget, not the photo, sets the working size; the guard answers the plain edge, exactly, when the solve did not
converge, moved the outline too far, or made a matte whose gradients do not follow the photo's; and it stays quiet
on a photo where refinement helps."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from deployments import edge_guard, edge_refine
from deployments.edges import DEFAULT_SETTINGS, cutout_edge
from serve_app.edge_quality.synthetic import REPORT_SEEDS, make_sample


@pytest.fixture(scope="module")
def sample():
    return make_sample(REPORT_SEEDS[1], 1152, 864)  # cluttered, 1 MP


def _disc_logits(radius_cells: float) -> np.ndarray:
    yy, xx = np.mgrid[0:256, 0:256] + 0.5
    logits = np.where((xx - 128) ** 2 + (yy - 128) ** 2 < radius_cells ** 2, 15.0, -15.0).astype(np.float32)
    return cv2.GaussianBlur(logits, (0, 0), 0.6)


def test_the_band_sets_the_working_size_not_the_photo():
    """The same outline at 1 MP and at 16x the pixels: the band at the working size holds at most the budget
    (5% slack) in both, so the larger photo is worked on at about the same megapixels, not 16x more."""
    logits = _disc_logits(60)
    settings = replace(DEFAULT_SETTINGS, band_pixels=5000)
    sizes = {}
    for side in (1024, 4096):
        photo = np.zeros((side, side, 3), np.uint8)
        work = edge_refine.working(photo, logits, settings)
        assert 0.5 * settings.band_pixels < np.count_nonzero(work.band) <= settings.band_pixels * 1.05
        sizes[side] = work.photo.shape[0] * work.photo.shape[1]
    assert sizes[4096] < 1.5 * sizes[1024] < 1.5 * 1024 ** 2
    small = edge_refine.working(np.zeros((200, 200, 3), np.uint8), logits, settings)
    assert small.scale == 1.0  # a band under budget is solved at full size


def test_guard_answers_the_plain_edge_exactly_when_the_solve_does_not_converge(sample):
    plain, plain_colours = cutout_edge(sample.rgb, sample.logits, False)
    settings = replace(DEFAULT_SETTINGS, iterations=1, guard_residual=1e-3)  # one CG step cannot get there
    found: dict = {}
    alpha, colours = cutout_edge(sample.rgb, sample.logits, True, settings=settings, diagnostics=found)
    assert found["guard"] == "not_converged" and found["residual"] > 1e-3
    assert np.array_equal(alpha, plain) and np.array_equal(colours, plain_colours)
    timings: dict = {}
    cutout_edge(sample.rgb, sample.logits, True, settings=settings, timings=timings)
    assert timings["refine_guard"] == 1.0


def test_guard_stays_quiet_where_refinement_helps(sample):
    found: dict = {}
    alpha, _ = cutout_edge(sample.rgb, sample.logits, True, diagnostics=found)
    assert found["guard"] is None and found["residual"] < DEFAULT_SETTINGS.guard_residual
    assert found["alignment"] > found["plain_alignment"] + DEFAULT_SETTINGS.guard_alignment
    plain, _ = cutout_edge(sample.rgb, sample.logits, False)
    truth = sample.alpha
    assert np.abs(alpha / 255.0 - truth).sum() < 0.8 * np.abs(plain / 255.0 - truth).sum()


def test_displacement_counts_how_far_the_outline_moved_in_cells():
    """SAM's disc of radius 60 cells at 4 px per cell; a matte whose disc is 1 cell larger all round has moved
    the outline by about one cell, and the guard's 'moved' fires past ``guard_cells``."""
    logits = _disc_logits(60)
    size = 1024
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r = np.hypot(xx - size / 2, yy - size / 2)
    inside = r < 240
    band = np.abs(r - 240) < 40
    for cells in (0, 1, 2):
        moved = (r < 240 + 4 * cells).astype(np.float32)
        assert edge_guard.displacement(moved, inside, band, logits) == pytest.approx(cells, abs=0.1)


def test_alignment_prefers_a_matte_on_the_photos_edge():
    """A matte whose edge lies on the photo's edge follows its gradients better than one 6 px off."""
    size = 256
    yy, xx = np.mgrid[0:size, 0:size]
    photo = np.where((xx < 128)[..., None], np.uint8(200), np.uint8(40)).repeat(3, -1)
    band = np.abs(xx - 128) < 20
    on_edge = (xx < 128).astype(np.float32)
    off_edge = (xx < 134).astype(np.float32)
    assert edge_guard.alignment(photo, on_edge, band) > 0.9 > edge_guard.alignment(photo, off_edge, band)


def test_guard_fires_when_the_matte_does_not_follow_the_photo(sample):
    """A guard that asks for more alignment than any matte can give answers the plain edge: the check is live."""
    found: dict = {}
    plain, _ = cutout_edge(sample.rgb, sample.logits, False, colours=False)
    alpha, _ = cutout_edge(sample.rgb, sample.logits, True, colours=False, diagnostics=found,
                           settings=replace(DEFAULT_SETTINGS, guard_alignment=1.0))
    assert found["guard"] == "gradients" and np.array_equal(alpha, plain)


def test_guard_can_be_switched_off(sample):
    found: dict = {}
    settings = replace(DEFAULT_SETTINGS, guard=False, guard_alignment=1.0)
    alpha, _ = cutout_edge(sample.rgb, sample.logits, True, colours=False, settings=settings, diagnostics=found)
    assert found["verdict"] == "gradients" and found["guard"] is None
    assert not np.array_equal(alpha, cutout_edge(sample.rgb, sample.logits, False, colours=False)[0])


def test_the_coarse_to_fine_pass_solves_only_unsure_band_pixels_at_full_size(sample):
    """``fine_iterations`` (tried, not the default): the carried-up matte's unsure pixels are solved again at
    full size; SAM's mask off the band is untouched and the pass reports what it solved."""
    settings = replace(DEFAULT_SETTINGS, fine_iterations=20, band_pixels=5000, guard=False)
    inside = edge_refine.upsample(sample.logits, *sample.alpha.shape) > 0
    found: dict = {}
    matte, band = edge_refine.refined_matte(sample.rgb, sample.logits, inside, settings, found)
    coarse, _ = edge_refine.refined_matte(sample.rgb, sample.logits, inside, replace(settings, fine_iterations=0), {})
    assert 0 < found["fine_pixels"] < band.sum()
    assert np.array_equal(matte[~band], inside[~band].astype(np.float32))
    changed = np.abs(matte - coarse) > 1e-4
    assert changed.any() and not (changed & ~band).any()


def test_guard_fires_when_the_matte_moves_the_outline_farther_than_allowed(sample):
    """Any refinement moves SAM's outline a little; with no displacement allowed the guard answers the plain edge."""
    found: dict = {}
    plain, _ = cutout_edge(sample.rgb, sample.logits, False, colours=False)
    alpha, _ = cutout_edge(sample.rgb, sample.logits, True, colours=False, diagnostics=found,
                           settings=replace(DEFAULT_SETTINGS, guard_cells=0.0))
    assert found["guard"] == "moved" and found["displacement_cells"] > 0 and np.array_equal(alpha, plain)
