"""The GPU path's colour estimation (deployments/edge_colours_torch.py), run here on the CPU: the same colours as
the numba path, and through ``cutout_edge`` with ``device="cpu"`` forced onto the torch path."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from deployments import edge_colours, edge_colours_torch, edges
from deployments.edges import DEFAULT_SETTINGS, cutout_edge
from serve_app.edge_quality.synthetic import REPORT_SEEDS, make_sample


@pytest.fixture(scope="module")
def sample():
    return make_sample(REPORT_SEEDS[1], 1152, 864)


def test_torch_colours_equal_the_numba_colours(sample):
    """Whole-level red-black sweeps in torch against numba's sweeps near the edge: the soft pixels' colours agree
    to within 2 levels (float order differs), 99% of them within 1."""
    alpha, _ = cutout_edge(sample.rgb, sample.logits, True, colours=False)
    numba_colours = edge_colours.decontaminate(sample.rgb, alpha, DEFAULT_SETTINGS)
    torch_colours = edge_colours_torch.decontaminate(sample.rgb, alpha, DEFAULT_SETTINGS, torch.device("cpu"))
    soft = (alpha > 0) & (alpha < 255)
    assert soft.sum() > 1000
    difference = np.abs(torch_colours.astype(int) - numba_colours.astype(int))[soft]
    assert difference.max() <= 2 and (difference <= 1).mean() > 0.99
    assert np.array_equal(torch_colours[~soft], sample.rgb[~soft])


def test_cutout_edge_takes_the_torch_path_on_cuda(sample, monkeypatch):
    """With the device reported as CUDA, cutout_edge estimates colours with the torch module (here run on the CPU
    by forcing its device), and the answer is the numba path's within the same tolerance."""
    calls = []
    real = edge_colours_torch.decontaminate

    def on_cpu(photo, alpha, settings, device):
        calls.append(device.type)
        return real(photo, alpha, settings, torch.device("cpu"))

    monkeypatch.setattr(edge_colours_torch, "decontaminate", on_cpu)
    monkeypatch.setattr(edges, "torch_device", lambda settings: torch.device("cuda"))
    alpha, colours = cutout_edge(sample.rgb, sample.logits, False)
    monkeypatch.undo()
    expected_alpha, expected = cutout_edge(sample.rgb, sample.logits, False)
    assert calls == ["cuda"] and np.array_equal(alpha, expected_alpha)
    assert np.abs(colours.astype(int) - expected.astype(int)).max() <= 2


def test_refined_edge_runs_on_an_explicit_device(sample):
    """``device="cpu"`` (what a CUDA-less test can force) gives the default's answer on this machine."""
    settings = replace(DEFAULT_SETTINGS, device="cpu")
    alpha, _ = cutout_edge(sample.rgb, sample.logits, True, colours=False, settings=settings)
    assert np.array_equal(alpha, cutout_edge(sample.rgb, sample.logits, True, colours=False)[0])
