"""The long-context ops and the evicting cache on device="cuda" (the CuPy stand-in,
tests/cupy_standin; no GPU needed): the same outputs and gradients as on the CPU."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.nn.long_context import SinkKVCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

pytestmark = cupy_standin.needs_compiler()
standin = cupy_standin.fixture()


def _fwd_bwd(op, arrays, device):
    ts = [tinyllm.tensor(a, device=device, requires_grad=True) for a in arrays]
    out = op(*ts)
    out.backward(tinyllm.ones(*out.shape, dtype=out.dtype, device=device))
    return out.detach().cpu().numpy(), [t.grad.cpu().numpy() for t in ts]


@pytest.mark.parametrize("name", ["causal_linear_attention", "wkv4"])
def test_op_on_cuda_equals_cpu(name):
    rng = np.random.default_rng(0)
    if name == "wkv4":
        arrays = [rng.standard_normal(3), rng.standard_normal(3)]
        arrays += [rng.standard_normal((2, 9, 3)) + 50.0, rng.standard_normal((2, 9, 3))]
    else:
        arrays = [rng.standard_normal((2, 70, 3)) for _ in range(3)]
    op = getattr(F, name)
    out, grads = _fwd_bwd(op, arrays, "cpu")
    out_c, grads_c = _fwd_bwd(op, arrays, "cuda")
    # float64, the same array code on another array module: 1e-12
    np.testing.assert_allclose(out_c, out, rtol=1e-12, atol=1e-12)
    for g, gc in zip(grads, grads_c):
        np.testing.assert_allclose(gc, g, rtol=1e-12, atol=1e-12)


def test_sink_cache_decodes_on_cuda():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, 9, 4)) for _ in range(3))
    outs = {}
    for device in ("cpu", "cuda"):
        cache, rows = SinkKVCache(window=3, sinks=1), []
        for p in range(9):
            sl = slice(p, p + 1)
            ck, cv, mask = cache.update(
                tinyllm.tensor(k[..., sl, :], device=device),
                tinyllm.tensor(v[..., sl, :], device=device),
            )
            qp = tinyllm.tensor(q[..., sl, :], device=device)
            rows.append(F.scaled_dot_product_attention(qp, ck, cv, attn_mask=mask).cpu().numpy())
        outs[device] = np.concatenate(rows, axis=-2)
    np.testing.assert_allclose(outs["cuda"], outs["cpu"], rtol=1e-12, atol=1e-12)
