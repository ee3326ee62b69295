"""The edge's settings: how much matting and colour estimation may cost, and where SAM counts as unsure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EdgeSettings:
    """Chosen on the tuning half of ``bgremove edge-quality`` (docs/benchmarks/edges-tuning.json)."""

    work_megapixels: float = 0.25  # matting budget per request: larger photos are solved downsampled
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
    decontaminate: bool = True  # estimate the subject's colour on the soft edge (plain and refined)
    solver: str = "torch"  # "torch" (this package's CG) or a pymatting method: "cf", "knn", "lkm", "rw"


DEFAULT_SETTINGS = EdgeSettings()
