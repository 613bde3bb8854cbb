"""tinyllm on device="cuda" (the CuPy stand-in) against the CPU: models, ops, RNG, AdamW."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import backend
from tinyllm.kernels import adamw, dispatch
from tinyllm.models import ModelConfig, build_model
from tinyllm.nn import init
from tinyllm.registry import all_ops

TINY = dict(vocab_size=11, d_model=8, n_layer=2, n_head=2, block_size=8)


def tiny(arch):
    tinyllm.manual_seed(0)
    return build_model(ModelConfig(arch=arch, **TINY))


def _to(model, device):
    for p in model.parameters():
        p.data = backend.to_device(p.data, device)
    return model


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_model_forward_backward_on_cuda_matches_cpu(arch):
    idx = np.random.default_rng(0).integers(0, 11, (2, 8))
    results = []
    for device in ("cpu", "cuda"):
        model = _to(tiny(arch), device)
        x = tinyllm.tensor(idx[:, :-1], device=device)
        y = tinyllm.tensor(idx[:, 1:], device=device)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1))
        loss.backward()
        results.append((loss.item(), [p.grad.cpu().numpy() for p in model.parameters()]))
    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = results
    assert abs(loss_cpu - loss_gpu) < 1e-5
    for g_cpu, g_gpu in zip(grads_cpu, grads_gpu):
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-4, atol=1e-5)


OPS = all_ops()
CASES = [
    pytest.param(name, k, id=f"{name}-{k}")
    for name, info in sorted(OPS.items())
    for k, _ in enumerate(info.samples(np.random.default_rng(0), np.float64))
]


def _on_cuda(value):
    """A sample's keyword value on the device (arrays become device Tensors)."""
    if isinstance(value, tinyllm.Tensor):
        return tinyllm.Tensor(backend.to_device(value.data, "cuda"))
    if isinstance(value, np.ndarray):
        return tinyllm.Tensor(backend.to_device(value, "cuda"))
    return value


@pytest.mark.parametrize("name,k", CASES)
def test_registry_gradcheck_float64_on_cuda(name, k):
    info = OPS[name]
    sample = info.samples(np.random.default_rng(0), np.float64)[k]
    args = [
        tinyllm.Tensor(backend.to_device(a.data, "cuda"), requires_grad=a.requires_grad)
        if isinstance(a, tinyllm.Tensor)
        else a
        for a in info.tensors(sample)
    ]
    if not any(isinstance(a, tinyllm.Tensor) and a.requires_grad for a in args):
        pytest.skip("no differentiable input")
    kwargs = {key: _on_cuda(v) for key, v in sample.kwargs.items()}

    def fn(*xs):
        return info.op(*xs, **kwargs)

    assert tinyllm.gradcheck(fn, args, atol=info.gradcheck_atol, rtol=info.gradcheck_rtol)


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_on_cuda_matches_cpu(use_cache):
    outs = []
    for device in ("cpu", "cuda"):
        model = _to(tiny("llama"), device)
        idx = tinyllm.tensor(np.array([[1, 2, 3]]), device=device)
        out = model.generate(idx, 6, temperature=0, use_cache=use_cache)
        assert out.device == device
        outs.append(out.cpu().numpy())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_manual_seed_before_cuda_use_makes_dropout_reproducible():
    draws = []
    for _ in range(2):
        tinyllm.manual_seed(123)  # the device generator does not exist yet
        x = tinyllm.ones(64, device="cuda")
        draws.append(F.dropout(x, 0.5, training=True).cpu().numpy())
    np.testing.assert_array_equal(draws[0], draws[1])


def test_rng_state_round_trip_on_both_devices():
    tinyllm.manual_seed(7)
    tinyllm.randn(3, device="cuda")
    state = backend.get_rng_state()
    after = (tinyllm.randn(4).cpu().numpy(), tinyllm.randn(4, device="cuda").cpu().numpy())
    tinyllm.randn(5, device="cuda")  # move on
    backend.set_rng_state(state)
    again = (tinyllm.randn(4).cpu().numpy(), tinyllm.randn(4, device="cuda").cpu().numpy())
    np.testing.assert_array_equal(after[0], again[0])
    np.testing.assert_array_equal(after[1], again[1])


def test_randperm_and_initializers_run_on_cuda():
    tinyllm.manual_seed(0)
    perm = tinyllm.randperm(50, device="cuda")
    assert perm.device == "cuda" and perm.dtype == np.int64
    assert sorted(perm.cpu().numpy().tolist()) == list(range(50))
    w = tinyllm.zeros(64, 32, device="cuda")
    init.normal_(w, 0.0, 0.02)
    assert 0.015 < float(w.cpu().numpy().std()) < 0.025
    init.trunc_normal_(w, std=1.0, a=-0.5, b=0.5)
    assert np.abs(w.cpu().numpy()).max() <= 0.5
    init.uniform_(w, -1.0, 1.0)
    assert w.cpu().numpy().min() >= -1.0 and w.device == "cuda"


def test_gather_backward_on_cuda():
    x = tinyllm.tensor(np.arange(12.0).reshape(3, 4), device="cuda", requires_grad=True)
    index = tinyllm.tensor(np.array([[0, 0], [3, 1], [2, 2]]), device="cuda")
    tinyllm.gather(x, 1, index).sum().backward()
    want = np.zeros((3, 4))
    np.add.at(want, (np.arange(3)[:, None], np.array([[0, 0], [3, 1], [2, 2]])), 1.0)
    np.testing.assert_array_equal(x.grad.cpu().numpy(), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_step_multi_is_one_launch_and_matches_per_tensor(standin, counters, dtype):
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (300,), (0,), (3, 4, 2)]
    hyper = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)

    def state():
        return [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(4)]

    host = state()
    host[3] = [np.abs(v) for v in host[3]]
    want = [[a.copy() for a in group] for group in host]
    device = [[standin.asarray(a) for a in group] for group in host]
    device[1][0] = standin.asarray(host[1][0].T.copy()).T  # a non-contiguous gradient
    device[1][0] = standin.ascontiguousarray(device[1][0])
    for step in (1, 2):
        for p, g, m, v in zip(*want):
            adamw.adamw_step(p, g, m, v, step=step, **hyper)
        counters.reset()
        adamw.adamw_step_multi(*device, step=step, **hyper)
        assert counters.launches == {f"adamw_multi_{'f32' if dtype == np.float32 else 'f64'}": 1}
        assert dispatch.last_tier("adamw_step_multi") == "cuda"
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for group_want, group_got in zip(want, device):
        for a, b in zip(group_want, group_got):
            np.testing.assert_allclose(b.get(), a, rtol=tol, atol=tol)


def test_tensor_normal_and_uniform_fill_in_place_on_cuda():
    """Tensor.normal_/uniform_ draw through backend.normal/uniform (CuPy's Generator has no
    ``normal``/``uniform``), keep the device and the dtype."""
    tinyllm.manual_seed(0)
    w = tinyllm.zeros(64, 32, device="cuda")
    assert w.normal_(1.0, 0.5) is w
    got = w.cpu().numpy()
    assert w.device == "cuda" and got.dtype == np.float32
    assert abs(got.mean() - 1.0) < 0.05 and 0.45 < got.std() < 0.55
    w.uniform_(-2.0, -1.0)
    got = w.cpu().numpy()
    assert w.device == "cuda" and got.min() >= -2.0 and got.max() < -1.0


def test_tensor_normal_and_uniform_keep_the_cpu_stream():
    """On the CPU the draws are NumPy's Generator.normal/uniform streams, as before."""
    tinyllm.manual_seed(3)
    a = tinyllm.zeros(5, dtype=np.float64).normal_(2.0, 3.0).numpy()
    b = tinyllm.zeros(5, dtype=np.float64).uniform_(-1.0, 4.0).numpy()
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(a, rng.normal(2.0, 3.0, 5))
    np.testing.assert_array_equal(b, rng.uniform(-1.0, 4.0, 5))


def test_flash_threshold_is_device_aware():
    """CPU: FLASH_MIN_SCORES; GPU: a share of device memory (the stand-in has 16 GiB), so a
    call with 2^26 scores takes flash on the CPU and the fused cuBLAS path on the device."""
    from tinyllm.functional import attention

    assert attention.flash_min_scores(np, np.float32) == attention.FLASH_MIN_SCORES
    budget = attention.FLASH_DEVICE_MEMORY_FRACTION * (1 << 34)
    cp = backend.xp_for("cuda")
    assert attention.flash_min_scores(cp, np.float32) == int(budget // 12)
    assert attention.flash_min_scores(cp, np.float64) == int(budget // 24)
    shape = (1, 1, 8192, 2)  # 2^26 scores
    paths = {}
    for device in ("cpu", "cuda"):
        q = tinyllm.zeros(*shape, device=device)
        paths[device] = attention._path(q, q, q, None, None, None, None)
    assert paths["cpu"] is attention.FlashScaledDotProductAttention
    assert paths["cuda"] is attention.FusedScaledDotProductAttention


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_path_on_cuda_runs_the_tiled_kernels_and_matches_cpu(
    monkeypatch, counters, dtype, causal
):
    """F.scaled_dot_product_attention forced onto the flash path on the device: the tiled
    kernels launch through the stand-in's RawModule (signature, thread and shared-memory
    checks) and agree with the CPU's (Numba flash) result and gradients."""
    from tinyllm.functional import attention

    monkeypatch.setattr(attention, "FLASH_MIN_SCORES", 0)
    monkeypatch.setattr(attention, "FLASH_DEVICE_MEMORY_FRACTION", 0)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, 3, 37, 40)).astype(dtype) for _ in range(3)]
    cot = rng.standard_normal((2, 3, 37, 40)).astype(dtype)
    results = []
    for device in ("cpu", "cuda"):
        q, k, v = (tinyllm.tensor(a, device=device, requires_grad=True) for a in arrays)
        counters.reset()
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out.backward(tinyllm.tensor(cot, device=device))
        if device == "cuda":
            suffix = "f32" if dtype == np.float32 else "f64"
            assert {f"flash_forward_{suffix}", f"flash_backward_dkdv_{suffix}",
                    f"flash_backward_dq_{suffix}"} <= set(counters.launches)  # fmt: skip
            assert counters.n_syncs == 0, counters.report()
        results.append([out.detach().cpu().numpy()] + [t.grad.cpu().numpy() for t in (q, k, v)])
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for cpu, gpu in zip(*results):
        np.testing.assert_allclose(gpu, cpu, rtol=tol, atol=tol)
