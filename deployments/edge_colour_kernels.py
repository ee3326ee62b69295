"""The two loops of colour estimation (``deployments/edge_colours.py``), compiled with numba: one level's
red-black sweeps of multi-level foreground estimation on the pixels near the edge, and the full-size step that
gives each soft pixel its subject colour. Both visit only the pixels they change, so their cost follows the edge's
length, not the photo's size. numba compiles them on first use (about a second; the postprocess stage does it at
start, in ``deployments.edges.warm_up``)."""

from __future__ import annotations

import numba
import numpy as np

f32 = np.float32


@numba.njit(nogil=True, cache=False)
def sweep_level(image, alpha, colours, active, sweeps, regularization, gradient_weight):  # pragma: no cover
    """Germer et al.'s update, in red-black order, ``sweeps`` times, of the ``active`` pixels: each pixel's subject
    and background colours (``colours[..., :3]`` and ``[..., 3:]``, updated in place) solve
    [[a^2 + w, a (1 - a)], [a (1 - a), (1 - a)^2 + w]] [F, B] = [a I + sum w_n F_n, (1 - a) I + sum w_n B_n],
    w_n = regularization + gradient_weight |a - a_n| over the 4-neighbours (borders replicated), w = sum w_n.
    image (h, w, 3), alpha (h, w), colours (h, w, 6): float32; active (h, w) bool."""
    h, w = alpha.shape
    one = f32(1.0)
    r = np.empty(6, np.float32)
    for _ in range(sweeps):
        for parity in range(2):
            for y in range(h):
                ys = (max(y - 1, 0), min(y + 1, h - 1), y, y)
                for x in range((y + parity) % 2, w, 2):
                    if not active[y, x]:
                        continue
                    xs = (x, x, max(x - 1, 0), min(x + 1, w - 1))
                    a = alpha[y, x]
                    total = f32(0.0)
                    r[:] = 0.0
                    for n in range(4):
                        k = regularization + gradient_weight * abs(a - alpha[ys[n], xs[n]])
                        total += k
                        for c in range(6):
                            r[c] += k * colours[ys[n], xs[n], c]
                    a01 = a * (one - a)
                    a00, a11 = a * a + total, (one - a) * (one - a) + total
                    det = a00 * a11 - a01 * a01
                    b00, b01, b11 = a11 / det, -a01 / det, a00 / det
                    for c in range(3):
                        r0 = a * image[y, x, c] + r[c]
                        r1 = (one - a) * image[y, x, c] + r[c + 3]
                        colours[y, x, c] = min(max(b00 * r0 + b01 * r1, f32(0.0)), one)
                        colours[y, x, c + 3] = min(max(b01 * r0 + b11 * r1, f32(0.0)), one)


@numba.njit(nogil=True, cache=False)
def finish_soft_pixels(photo, alpha, estimates, out, top, bottom):  # pragma: no cover
    """Each soft pixel (0 < alpha < 255) of the full-size photo solves the same two-colour system once more with
    its own colour and alpha (8-bit), its neighbours' colours bilinearly sampled at the pixel's centre from the
    working-size ``estimates`` (h, w, 6), its weights from its own 4-neighbours; by Cramer's rule
    F = w (a I + a11 F' - a01 B') / det. Writes F (uint8) into ``out`` for rows top..bottom-1 (so that threads can
share a photo); other pixels are left as they are."""
    height, width = alpha.shape
    h, w = estimates.shape[0], estimates.shape[1]
    sy, sx = f32(h / height), f32(w / width)
    one, half, scale = f32(1.0), f32(0.5), f32(1.0 / 255.0)
    for y in range(top, bottom):
        fy = max((f32(y) + half) * sy - half, f32(0.0))
        y0 = min(int(fy), h - 1)
        y1 = min(y0 + 1, h - 1)
        wy = fy - f32(y0)
        up, down = max(y - 1, 0), min(y + 1, height - 1)
        for x in range(width):
            value = alpha[y, x]
            if value == 0 or value == 255:
                continue
            fx = max((f32(x) + half) * sx - half, f32(0.0))
            x0 = min(int(fx), w - 1)
            x1 = min(x0 + 1, w - 1)
            wx = fx - f32(x0)
            a = f32(value)
            total = (abs(a - f32(alpha[up, x])) + abs(a - f32(alpha[down, x]))
                     + abs(a - f32(alpha[y, max(x - 1, 0)])) + abs(a - f32(alpha[y, min(x + 1, width - 1)]))) \
                * scale + f32(4e-5)
            a = a * scale
            a11 = (one - a) * (one - a) + total
            a01 = a * (one - a)
            k = total / ((a * a + total) * a11 - a01 * a01)
            w00, w01 = (one - wy) * (one - wx), (one - wy) * wx
            w10, w11 = wy * (one - wx), wy * wx
            for c in range(3):
                f = w00 * estimates[y0, x0, c] + w01 * estimates[y0, x1, c] \
                    + w10 * estimates[y1, x0, c] + w11 * estimates[y1, x1, c]
                b = w00 * estimates[y0, x0, c + 3] + w01 * estimates[y0, x1, c + 3] \
                    + w10 * estimates[y1, x0, c + 3] + w11 * estimates[y1, x1, c + 3]
                v = k * (a * f32(photo[y, x, c]) * scale + a11 * f - a01 * b)
                out[y, x, c] = np.uint8(np.round(min(max(v, f32(0.0)), one) * f32(255.0)))
