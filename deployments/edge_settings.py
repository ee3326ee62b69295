"""The edge's settings: how much matting and colour estimation may cost, and where SAM counts as unsure."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EdgeSettings:
    """Chosen on the tuning half of ``bgremove edge-quality``: the band budget per size in
    docs/benchmarks/edges/methods-tuning.json, the rest in docs/benchmarks/edges/tuning.json (docs/edges.md,
    "Measured")."""

    band_pixels: int = 10_000  # matting budget per request, over the band only: the photo is worked on at the
    # largest scale (<= 1) whose band holds at most this many pixels (edge_refine.py)
    fine_iterations: int = 0  # coarse to fine: CG steps at full size on what the carried-up matte left unsure
    fine_threshold: float = 0.02  # "unsure" for that pass: alpha between this and 1 - this
    unknown_logit: float = 8.0  # |logit| below this is SAM unsure
    band_cells: float = 2.0  # the unsure region widened by this many logit cells (SAM's outline can be a cell off)
    epsilon: float = 1e-5  # the matting Laplacian's colour regulariser (not searched)
    iterations: int = 120  # conjugate-gradient steps (the coarse alpha is the starting guess)
    guide_radius: int = 1  # window (working pixels) of the linear model that carries the matte to full size
    guide_epsilon: float = 1e-4
    alpha_low: float = 0.03  # levels on the refined matte: at or below alpha_low is background, at or above
    alpha_high: float = 0.92  # alpha_high subject (the matte's faint haze costs composite error on a new colour)
    colour_megapixels: float = 0.25  # colour estimation's own working size
    colour_band_pixels: int = 40_000  # colour estimation's working pixels near the edge: a mask soft almost
    # everywhere (SAM unsure of the whole photo) is estimated on a smaller copy instead of costing the photo
    colour_iterations: int = 2  # foreground estimation's sweeps per level above 32 px (pymatting's default)
    guard: bool = True  # answer the plain edge when the refined one looks wrong (edge_guard.py)
    guard_residual: float = 0.01  # the solve's relative residual above which it did not converge
    guard_cells: float = 1.5  # mean outline displacement (logit cells) beyond which the matte moved too far
    guard_alignment: float = 0.05  # how much better than the plain edge's the matte's gradients must follow the
    # photo's (cosine over the band)
    decontaminate: bool = True  # estimate the subject's colour on the soft edge (plain and refined)
    device: str = "auto"  # the torch solve's device: "auto" (CUDA when visible), "cpu", "cuda"
    solver: str = "torch"  # "torch" (this package's CG) or a pymatting method: "cf", "knn", "lkm", "rw"


DEFAULT_SETTINGS = EdgeSettings()


def torch_device(settings: EdgeSettings) -> torch.device:
    """Where the refined edge's solve, guided upsampling and (on CUDA) colour estimation run: ``settings.device``,
    "auto" being CUDA when this process sees a GPU (a Postprocess replica sees one only if its config gives it a
    share)."""
    if settings.device != "auto":
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
