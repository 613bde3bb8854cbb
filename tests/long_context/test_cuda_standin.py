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


@pytest.mark.parametrize(
    "name", ["causal_linear_attention", "wkv4", "gateloop", "gateloop_complex"]
)
def test_op_on_cuda_equals_cpu(name):
    rng = np.random.default_rng(0)
    if name == "wkv4":
        arrays = [rng.standard_normal(3), rng.standard_normal(3)]
        arrays += [rng.standard_normal((2, 9, 3)) + 50.0, rng.standard_normal((2, 9, 3))]
    else:
        arrays = [rng.standard_normal((2, 70, 3)) for _ in range(3)]
    if name.startswith("gateloop"):  # + gates in (0, 1); T = 70 > CHUNK: the chunked backward
        arrays.append(1 / (1 + np.exp(-rng.standard_normal((2, 70, 3)))))
    if name == "gateloop_complex":  # + phases: complex gates a e^{i theta}
        arrays.append(rng.uniform(-np.pi, np.pi, (2, 70, 3)))
    op = getattr(F, name.removesuffix("_complex"))
    out, grads = _fwd_bwd(op, arrays, "cpu")
    out_c, grads_c = _fwd_bwd(op, arrays, "cuda")
    # float64, the same arithmetic on another array module (wkv4: the CUDA kernels, emulated,
    # against the Numba kernels: one scalar scan in the same order): 1e-12
    np.testing.assert_allclose(out_c, out, rtol=1e-12, atol=1e-12)
    for g, gc in zip(grads, grads_c):
        np.testing.assert_allclose(gc, g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tier", ["auto", "cuda", "reference"])
def test_wkv4_on_cuda_runs_the_tier_asked_for(tier):
    """F.wkv4 on device="cuda": the CUDA kernels (kernels/wkv.cu, run by the stand-in's
    RawModule) by default and under kernels.use("cuda"), the array code under
    kernels.use("reference"); each gives the CPU's outputs and gradients, keys shifted by 800."""
    import tinyllm.kernels as K

    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(4), rng.standard_normal(4)]
    arrays += [rng.standard_normal((2, 13, 4)) + 800.0, rng.standard_normal((2, 13, 4))]
    out, grads = _fwd_bwd(F.wkv4, arrays, "cpu")
    K.reset_counts()
    with K.use(tier):
        out_c, grads_c = _fwd_bwd(F.wkv4, arrays, "cuda")
    ran = "reference" if tier == "reference" else "cuda"
    counts = K.tier_counts()
    assert counts.get(("wkv4_forward", ran)) == counts.get(("wkv4_backward", ran)) == 1, counts
    # float64; the keys' spacing at 800 (1.1e-13) enters dk, dv through log D_t
    # (tests/kernels/test_wkv_cuda_emulated.py): 1e-12 covers it
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


def test_checkpoint_with_dropout_on_cuda_gives_the_plain_gradients():
    from tinyllm import nn
    from tinyllm.utils.checkpoint import checkpoint

    tinyllm.manual_seed(0)
    block = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.3), nn.Linear(6, 6)).to("cuda")
    x0 = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    grads = []
    for use in (False, True):
        tinyllm.manual_seed(1)
        if not use:  # the device stream epoch that checkpoint starts (and replays) in its run
            tinyllm.backend.get_rng_state()
        x = tinyllm.tensor(x0, device="cuda", requires_grad=True)
        y = checkpoint(block, x) if use else block(x)
        (y * y).sum().backward()
        grads.append([x.grad.cpu().numpy()] + [p.grad.cpu().numpy() for p in block.parameters()])
        block.zero_grad()
    for g, g_ck in zip(*grads):
        np.testing.assert_array_equal(g, g_ck)  # the replayed device stream: the same masks
