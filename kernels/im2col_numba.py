"""Numba bodies of im2col and col2im (math in ``im2col.py``): (n, c) planes in parallel."""

from __future__ import annotations

from numba import njit, prange

from tinyllm.kernels import numba_math  # noqa: F401  (numba_cache.install() first)


@njit(parallel=True, cache=True, error_model="numpy")
def im2col_planes(x, sh, sw, dh, dw, top, left, pad_value, cols):
    """cols[b, i, j, p, q] = x[b, p sh + i dh - top, q sw + j dw - left], or pad_value
    outside the image. x: [B, H, W] (B = N C planes); cols: [B, kh, kw, Ho, Wo]."""
    B, H, W = x.shape
    kh, kw, Ho, Wo = cols.shape[1], cols.shape[2], cols.shape[3], cols.shape[4]
    for b in prange(B):
        for i in range(kh):
            for j in range(kw):
                for p in range(Ho):
                    h = p * sh + i * dh - top
                    for q in range(Wo):
                        w = q * sw + j * dw - left
                        if 0 <= h < H and 0 <= w < W:
                            cols[b, i, j, p, q] = x[b, h, w]
                        else:
                            cols[b, i, j, p, q] = pad_value


@njit(parallel=True, cache=True, error_model="numpy")
def col2im_planes(cols, sh, sw, dh, dw, top, left, dx):
    """dx[b, h, w] += cols[b, i, j, p, q] for h = p sh + i dh - top, w = q sw + j dw - left
    inside the image (dx zeroed by the caller). Each task owns one plane b: no races."""
    B, H, W = dx.shape
    kh, kw, Ho, Wo = cols.shape[1], cols.shape[2], cols.shape[3], cols.shape[4]
    for b in prange(B):
        for i in range(kh):
            for j in range(kw):
                for p in range(Ho):
                    h = p * sh + i * dh - top
                    if h < 0 or h >= H:
                        continue
                    for q in range(Wo):
                        w = q * sw + j * dw - left
                        if 0 <= w < W:
                            dx[b, h, w] += cols[b, i, j, p, q]
