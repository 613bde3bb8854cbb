"""Time forward + backward vs sequence length: softmax attention (F.scaled_dot_product_attention,
causal), causal linear attention, RWKV-4's wkv4, and sliding-window attention (window 256)
with an explicit [T, T] mask and chunked through the evicting cache (chunks of 128). Not
collected by pytest.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 TINYLLM_NUM_THREADS=1 \
        /work/venv/bin/python tests/long_context/bench_long_context.py [T ...]

(one thread: on the shared, oversubscribed 2-core machine a 2-thread BLAS made one small
[128, 64] x [64, 384] GEMM take 127 ms instead of 0.8 ms, which swamps every other cost.)

Shapes: attention B 1, H 4, D 64 (float32); wkv4 B 1, C 256 (float32). Prints the median of
3 runs in ms. The machine is shared: report its load with the numbers.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.nn.long_context import sliding_window_attention, sliding_window_mask

WINDOW, CHUNK, MASKED_MAX_T = 256, 128, 4096  # the masked form holds [4, T, T] scores


def _time(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _fwd_bwd(op, arrays, **kw):
    def run():
        ts = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
        op(*ts, **kw).sum().backward()

    return run


def main(lengths) -> None:
    rng = np.random.default_rng(0)
    print(
        f"{'T':>6} {'sdpa causal':>12} {'linear attn':>12} {'wkv4':>10} {'window mask':>12} "
        f"{'window chunk':>13}   (ms, fwd + bwd)"
    )
    for T in lengths:
        qkv = [rng.standard_normal((1, 4, T, 64)).astype(np.float32) for _ in range(3)]
        C = 256
        wkv_args = [
            rng.standard_normal(C).astype(np.float32),
            rng.standard_normal(C).astype(np.float32),
            rng.standard_normal((1, T, C)).astype(np.float32),
            rng.standard_normal((1, T, C)).astype(np.float32),
        ]
        sdpa = _time(_fwd_bwd(F.scaled_dot_product_attention, qkv, is_causal=True))
        lin = _time(_fwd_bwd(F.causal_linear_attention, qkv))
        wkv = _time(_fwd_bwd(F.wkv4, wkv_args))
        masked = float("nan")
        if T <= MASKED_MAX_T:
            mask = sliding_window_mask(T, window=WINDOW)
            masked = _time(_fwd_bwd(F.scaled_dot_product_attention, qkv, attn_mask=mask))
        chunked = _time(_fwd_bwd(sliding_window_attention, qkv, window=WINDOW, chunk_size=CHUNK))
        print(f"{T:>6} {sdpa:>12.1f} {lin:>12.1f} {wkv:>10.1f} {masked:>12.1f} {chunked:>13.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [256, 1024, 4096])
