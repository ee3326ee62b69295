"""Closed-form matting (Levin, Lischinski, Weiss 2008) solved matrix-free in torch, so that it runs on the GPU.

The matting Laplacian is never built: ``L p`` is computed with 3x3 box sums over the photo's window statistics
(He, Sun, Tang 2010, "Fast matting using large kernel matting Laplacian matrices"), so memory is a few dozen
floats per pixel. Only the tiles that hold unknown pixels are computed, as one batch (the band around an
outline is a small part of its bounding box). The unknown pixels are solved with Jacobi-preconditioned
conjugate gradients while the known ones stay fixed: the same system as ``pymatting.estimate_alpha_cf``
(``L_UU x_U = -L_UK x_K``), which tests/test_edges.py checks it against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 9  # pixels in a 3x3 window (radius 1, as pymatting's default)
TILE = 32  # pixels per tile side; each tile is computed with a 2-pixel halo


def _box_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over each 3x3 window that lies wholly inside: (..., H, W) -> (..., H-2, W-2). Shifted adds, which
    on a CPU are several times faster than pooling or convolution."""
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _spread(x: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``_box_sum``: each pixel sums the values of every window holding it, (..., h, w) ->
    (..., h+2, w+2)."""
    return _box_sum(F.pad(x, (2, 2, 2, 2)))


class MattingLaplacian:
    """``L p`` for photos (N, 3, H, W) in [0, 1]; ``valid`` (N, 1, H-2, W-2) says which 3x3 windows exist
    (those wholly inside the real photo); epsilon regularises each window's colour covariance."""

    def __init__(self, image: torch.Tensor, epsilon: float, valid: torch.Tensor | None = None):
        self.image = image
        self.valid = valid if valid is not None else torch.ones_like(image[:, :1, 1:-1, 1:-1])
        mean = _box_sum(image) / WINDOW  # (N, 3, h, w)
        cov = torch.stack([_box_sum(image[:, i] * image[:, j]) / WINDOW - mean[:, i] * mean[:, j]
                           for i in range(3) for j in range(3)], -1).reshape(*mean.shape[:1], *mean.shape[2:], 3, 3)
        cov = cov + (epsilon / WINDOW) * torch.eye(3, dtype=image.dtype, device=image.device)
        self.inverse = torch.linalg.inv(cov).permute(0, 3, 4, 1, 2).contiguous()  # (N, 3, 3, h, w), symmetric
        self.mean = mean
        self.count = _spread(self.valid)  # windows per pixel

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """p (N, 1, H, W) -> L p, same shape (exact where every window holding the pixel is in the patch)."""
        p_mean = _box_sum(p) / WINDOW
        cross = _box_sum(self.image * p) / WINDOW - self.mean * p_mean  # covariance of colour and p
        a = (self.inverse * cross[:, None]).sum(2) * self.valid  # a_i = sum_j inv_ij cross_j
        b = (p_mean - (a * self.mean).sum(1, keepdim=True)) * self.valid
        fitted = (_spread(a) * self.image).sum(1, keepdim=True) + _spread(b)
        return self.count * p - fitted

    def diagonal(self) -> torch.Tensor:
        """L_ii = sum over windows k holding i of 1 - (1 + (I_i - mu_k)^T inv_k (I_i - mu_k)) / 9."""
        inv, mu, n = self.inverse, self.mean, self.mean.shape[0]
        inv_mu = (inv * mu[:, None]).sum(2)
        terms = torch.cat([inv.reshape(n, 9, *mu.shape[2:]), inv_mu, (inv_mu * mu).sum(1, keepdim=True)], 1)
        spread = _spread(terms * self.valid)
        image = self.image
        quad = ((spread[:, :9].reshape(n, 3, 3, *image.shape[2:]) * image[:, :, None] * image[:, None]).sum((1, 2))
                - 2 * (image * spread[:, 9:12]).sum(1) + spread[:, 12])[:, None]
        return self.count * (1 - 1 / WINDOW) - quad / WINDOW


class _Tiles:
    """The tiles of an (H, W) canvas that hold unknown pixels, as gather / scatter indices."""

    def __init__(self, free: torch.Tensor):
        height, width = free.shape
        self.rows, self.cols = -(-height // TILE), -(-width // TILE)
        self.canvas = (self.rows * TILE + 4, self.cols * TILE + 4)  # padded to whole tiles, plus the halo
        padded = F.pad(free, (2, self.canvas[1] - width - 2, 2, self.canvas[0] - height - 2))
        active = padded[2:-2, 2:-2].reshape(self.rows, TILE, self.cols, TILE).any(3).any(1).nonzero()
        device = free.device
        r = torch.arange(TILE + 4, device=device)
        top, left = active[:, 0] * TILE, active[:, 1] * TILE
        patch_rows = top[:, None, None] + r[None, :, None]
        patch_cols = left[:, None, None] + r[None, None, :]
        self.patch = (patch_rows * self.canvas[1] + patch_cols).reshape(len(active), -1)
        self.interior = self.patch.reshape(-1, TILE + 4, TILE + 4)[:, 2:-2, 2:-2].reshape(len(active), -1)
        self.size = (height, width)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) -> (C, canvas) with zeros around."""
        height, width = self.size
        return F.pad(x, (2, self.canvas[1] - width - 2, 2, self.canvas[0] - height - 2))

    def gather(self, canvas: torch.Tensor) -> torch.Tensor:
        """(C, canvas) -> (N, C, TILE+4, TILE+4)."""
        c = canvas.shape[0]
        return canvas.reshape(c, -1)[:, self.patch].permute(1, 0, 2).reshape(-1, c, TILE + 4, TILE + 4)

    def scatter(self, patches: torch.Tensor) -> torch.Tensor:
        """The interiors of (N, 1, TILE+4, TILE+4) patches into a zero canvas (1, canvas)."""
        out = torch.zeros(self.canvas[0] * self.canvas[1], dtype=patches.dtype, device=patches.device)
        out[self.interior.reshape(-1)] = patches[:, 0, 2:-2, 2:-2].reshape(-1)
        return out.reshape(1, *self.canvas)


def solve_alpha(image: torch.Tensor, known: torch.Tensor, alpha: torch.Tensor, epsilon: float = 1e-5,
                iterations: int = 200, tolerance: float = 1e-4, info: dict | None = None) -> torch.Tensor:
    """Closed-form alpha for the pixels where ``known`` is False, the others fixed at ``alpha``.

    image (3, H, W) float in [0, 1]; known (H, W) bool; alpha (H, W) float: known values, and the starting
    guess for the unknown ones (a good guess, such as the coarse alpha, saves iterations). Stops after
    ``iterations`` or when the residual falls below ``tolerance`` times the right-hand side's norm; ``info``, if
    given, receives ``residual`` (the final residual over the right-hand side's norm: the guard's convergence
    test) and ``iterations``.
    """
    dtype = image.dtype
    tiles = _Tiles(~known)
    if tiles.patch.shape[0] == 0:
        if info is not None:
            info.update(residual=0.0, iterations=0)
        return alpha.to(dtype).clamp(0.0, 1.0)
    inside = tiles.pad(torch.ones_like(alpha, dtype=dtype)[None])
    valid = tiles.gather(inside)
    valid = valid[:, :, :-2, :-2] * valid[:, :, 2:, 2:] * valid[:, :, :-2, 2:] * valid[:, :, 2:, :-2]  # window wholly inside
    laplacian = MattingLaplacian(tiles.gather(tiles.pad(image)), epsilon, valid)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return tiles.scatter(laplacian(tiles.gather(x)))

    free = tiles.pad((~known).to(dtype)[None])
    x = tiles.pad(alpha.to(dtype)[None])
    inv_diag = free / tiles.scatter(laplacian.diagonal()).clamp_min(1e-8)
    residual = -free * apply(x)
    rhs_norm = (free * apply(x * (1 - free))).norm().clamp_min(1e-12)
    z = inv_diag * residual
    direction = z.clone()
    rz = (residual * z).sum()
    done = 0
    for done in range(iterations + 1):
        if done == iterations or residual.norm() <= tolerance * rhs_norm:
            break
        q = free * apply(direction)
        step = rz / (direction * q).sum().clamp_min(1e-30)
        x += step * direction
        residual -= step * q
        z = inv_diag * residual
        rz, rz_old = (residual * z).sum(), rz
        direction = z + (rz / rz_old) * direction
    if info is not None:
        info.update(residual=float(residual.norm() / rhs_norm), iterations=done)
    height, width = alpha.shape
    return x[0, 2:2 + height, 2:2 + width].clamp_(0.0, 1.0)
