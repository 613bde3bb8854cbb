"""GPTQ (Frantar et al., ICLR 2023): quantize a linear layer's columns one at a time, each
column's rounding error compensated on the columns not yet quantized.

For a layer Y = X W^T with calibration inputs X [n, K], the output error of a quantized Q is
||X W^T - X Q^T||_F^2 = sum_rows (w - q) H (w - q)^T / 2 with the Hessian H = (2/n) X^T X
(the same for every row). Quantizing column i to q_i and updating the remaining columns
F by the optimal brain surgeon step

    delta_F = -(w_i - q_i) / [H_F^-1]_ii * [H_F^-1]_{i, F}

is exact for a quadratic. The rows of the upper Cholesky factor U of H^-1 (H^-1 = U^T U) give
every [H_F^-1]_{i, F} / [H_F^-1]_ii at once: err_i = (w_i - q_i) / U_ii, W[:, F] -= err_i U[i, F],
and the loss of the step is (w_i - q_i)^2 / (2 U_ii^2) summed over rows.

Steps (``gptq_quantize``):

1. dead inputs (H_jj = 0): H_jj = 1 and W[:, j] = 0;
2. act-order (optional): columns in descending diag(H) (W and H permuted alike);
3. dampening: H += lambda I, lambda = percdamp * mean(diag H);
4. U = upper Cholesky factor of H^-1;
5. columns in blocks of B ("lazy batch"): inside a block the updates touch the block only;
   after it, the block's errors update the rest in one GEMM: W[:, end:] -= Err U[block, end:].
   The result does not depend on B (the tests check B = 1, 7, 128).
6. groups of g columns: the group's scale and zero are computed when the sweep reaches the
   group, from its columns as updated so far (including the pending lazy updates, so that
   step 5's invariance holds). With act-order and groups, the groups' parameters are computed
   up front from the original W (AutoGPTQ's ``static_groups``) so the groups stay contiguous
   in the original column order and the packed format needs no g_idx.

With H a multiple of I nothing propagates (U is diagonal) and GPTQ is round-to-nearest.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from tinyllm.quant.schemes import QuantizedWeight, compute_qparams, num_groups

__all__ = ["HessianAccumulator", "gptq_quantize"]


class HessianAccumulator:
    """The running H = (2 / n) sum_t x_t x_t^T over calibration rows x_t [K] (float64)."""

    def __init__(self, K: int) -> None:
        self.H = np.zeros((K, K), dtype=np.float64)
        self.n = 0

    def add_batch(self, x: np.ndarray) -> None:
        """Add the rows of x [..., K]."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.H.shape[0])
        m = x.shape[0]
        if m == 0:
            return
        total = self.n + m
        self.H *= self.n / total
        self.H += (2.0 / total) * (x.T @ x)
        self.n = total


def _quantize_column(w, scale, zero, qmax):
    q = np.clip(np.rint(w / scale) + zero, 0, qmax)
    return q, scale * (q - zero)


def gptq_quantize(
    W: np.ndarray,
    H: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    blocksize: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
) -> tuple[QuantizedWeight, dict]:
    """GPTQ-quantize W [N, K] under the Hessian H [K, K]; returns (weight, info).

    ``group_size`` None (or >= K) is per-channel. ``info`` holds ``loss`` (the sum of the
    OBS step losses, = 1/2 tr((W - Q) H_damped (W - Q)^T)), ``perm`` and ``damp``.
    """
    W = np.array(W, dtype=np.float64)
    H = np.array(H, dtype=np.float64)
    N, K = W.shape
    if H.shape != (K, K):
        raise ValueError(f"gptq_quantize: H must be [{K}, {K}] for W {W.shape}, got {H.shape}")
    if blocksize < 1:
        raise ValueError(f"gptq_quantize: blocksize must be >= 1, got {blocksize}")
    g = K if group_size is None or group_size >= K else int(group_size)
    qmax = 2**bits - 1
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    grouped = g < K
    G = num_groups(K, g)
    scales = np.empty((N, G), dtype=np.float64)
    zeros = np.empty((N, G), dtype=np.float64)
    static = (not grouped) or act_order
    if static:  # parameters from the original W (per channel, or static groups)
        s0, z0, _ = compute_qparams(W, bits, "group" if grouped else "channel", g, symmetric)
        scales[:], zeros[:] = s0, z0

    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(K)
    W, H = W[:, perm], H[perm][:, perm]
    damp = percdamp * float(np.mean(np.diag(H)))
    H[np.diag_indices(K)] += damp
    L = np.linalg.cholesky(H)  # H = L L^T
    L_inv = solve_triangular(L, np.eye(K), lower=True)
    Hinv = L_inv.T @ L_inv  # H^-1 = L^-T L^-1
    U = np.linalg.cholesky(Hinv).T  # upper: H^-1 = U^T U

    codes = np.zeros((N, K), dtype=np.uint8)  # in permuted order
    losses = np.zeros(N)
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if not static and col % g == 0:  # a new group: params from the updated columns
                end = min(col + g, K)
                inside = W1[:, i : min(end, i2) - i1]
                outside = W[:, i2:end] - Err1[:, :i] @ U[i1:col, i2:end] if end > i2 else None
                cols = inside if outside is None else np.concatenate([inside, outside], axis=1)
                s, z, _ = compute_qparams(cols, bits, "channel", None, symmetric)
                scales[:, col // g], zeros[:, col // g] = s[:, 0], z[:, 0]
            j = perm[col] // g
            w = W1[:, i]
            q, dq = _quantize_column(w, scales[:, j], zeros[:, j], qmax)
            codes[:, col] = q
            d = U[col, col]
            losses += (w - dq) ** 2 / d**2 / 2.0
            err = (w - dq) / d
            W1[:, i:] -= np.outer(err, U[col, col:i2])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]

    out = np.empty_like(codes)
    out[:, perm] = codes
    weight = QuantizedWeight.from_codes(out, scales.astype(np.float32), zeros, bits, g, symmetric)
    return weight, {"loss": float(losses.sum()), "perm": perm, "damp": damp}
