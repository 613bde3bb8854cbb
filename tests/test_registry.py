"""Generic tests over the op registry: every op, every sample, every check.

forward vs the NumPy reference (float64 and float32), gradcheck in float64 under a random
cotangent, the fused op's gradient vs the autograd of its composite, inputs not mutated, and
non-contiguous inputs giving the same result.
"""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.registry import all_ops, covered_names

OPS = all_ops()
CASES = []
for _name, _info in sorted(OPS.items()):
    for _k, _sample in enumerate(_info.samples(np.random.default_rng(0), np.float64)):
        CASES.append(pytest.param(_name, _k, id=f"{_name}-{_sample.name or _k}"))


def _sample(name, k, dtype, seed=0):
    info = OPS[name]
    return info, info.samples(np.random.default_rng(seed), dtype)[k]


def _flat(result):
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [t for t in items if isinstance(t, tinyllm.Tensor)]


def _call(info, sample, args):
    return info.op(*args, **sample.kwargs)


def _reference_args(sample):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in sample.args]


@pytest.mark.parametrize("name,k", CASES)
def test_forward_matches_reference_float64(name, k):
    info, sample = _sample(name, k, np.float64)
    if info.reference is None:
        pytest.skip(f"{name} has no NumPy reference")
    with tinyllm.no_grad():
        outs = _flat(_call(info, sample, info.tensors(sample)))
    expected = info.reference(*_reference_args(sample), **sample.kwargs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(outs) == len(expected)
    for out, ref in zip(outs, expected):
        assert out.shape == np.shape(ref)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,k", CASES)
def test_gradcheck_float64_random_cotangent(name, k):
    info, sample = _sample(name, k, np.float64)
    args = info.tensors(sample)
    if not any(isinstance(a, tinyllm.Tensor) and a.requires_grad for a in args):
        pytest.skip(f"{name}: sample {sample.name!r} has no differentiable input")

    def fn(*xs):
        return info.op(*xs, **sample.kwargs)

    assert tinyllm.gradcheck(fn, args, atol=info.gradcheck_atol, rtol=info.gradcheck_rtol)


@pytest.mark.parametrize("name,k", CASES)
def test_float32_forward_and_backward_stay_float32(name, k):
    info, sample = _sample(name, k, np.float32)
    args = info.tensors(sample)
    outs = _flat(_call(info, sample, args))
    for out in outs:
        if out.is_floating_point():
            assert out.dtype == np.float32, f"{name} upcast its output to {out.dtype}"
    if info.reference is not None:
        ref64 = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                 for a in sample.args]  # fmt: skip
        expected = info.reference(*ref64, **sample.kwargs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for out, ref in zip(outs, expected):
            np.testing.assert_allclose(
                out.detach().numpy(), ref, rtol=info.forward_rtol32, atol=info.forward_atol32
            )
    rng = np.random.default_rng(1)
    for j, out in enumerate(outs):
        if out.requires_grad:
            out.backward(rng.standard_normal(out.shape).astype(np.float32),
                         retain_graph=j < len(outs) - 1)  # fmt: skip
    for a in args:
        if isinstance(a, tinyllm.Tensor) and a.requires_grad:
            assert a.grad is not None and a.grad.dtype == np.float32


@pytest.mark.parametrize("name,k", CASES)
def test_inputs_not_mutated(name, k):
    info, sample = _sample(name, k, np.float64)
    args = info.tensors(sample)
    before = [a.data.copy() for a in args if isinstance(a, tinyllm.Tensor)]
    outs = _flat(_call(info, sample, args))
    for j, out in enumerate(outs):
        if out.requires_grad:
            out.backward(np.ones(out.shape), retain_graph=j < len(outs) - 1)
    after = [a.data for a in args if isinstance(a, tinyllm.Tensor)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def _non_contiguous(a):
    """The same values in a non-contiguous array (a strided view into a bigger buffer)."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return a
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    view = big[..., ::2]
    view[...] = a
    assert not view.flags.c_contiguous or a.shape[-1] == 1
    return view


@pytest.mark.parametrize("name,k", CASES)
def test_non_contiguous_inputs(name, k):
    info, sample = _sample(name, k, np.float64)
    args = info.tensors(sample)
    strided_sample = type(sample)(
        tuple(_non_contiguous(a) for a in sample.args), sample.kwargs, sample.name, sample.no_grad
    )
    strided = info.tensors(strided_sample, copy=False)
    assert any(
        isinstance(t, tinyllm.Tensor) and t.ndim and not t.data.flags.c_contiguous
        for t in strided
        if t is not None
    ) or all(not isinstance(a, np.ndarray) or a.ndim == 0 or a.shape[-1] == 1 for a in sample.args)
    outs = _flat(_call(info, sample, args))
    outs_s = _flat(_call(info, sample, strided))
    rng = np.random.default_rng(2)
    cot = [rng.standard_normal(o.shape) for o in outs]
    for j, (o, os_, v) in enumerate(zip(outs, outs_s, cot)):
        np.testing.assert_allclose(os_.data, o.data, rtol=1e-12, atol=1e-12)
        if o.requires_grad:
            o.backward(v, retain_graph=j < len(outs) - 1)
            os_.backward(v, retain_graph=j < len(outs) - 1)
    for a, s in zip(args, strided):
        if isinstance(a, tinyllm.Tensor) and a.requires_grad:
            np.testing.assert_allclose(s.grad.data, a.grad.data, rtol=1e-12, atol=1e-12)


COMPOSITE_CASES = [c for c in CASES if OPS[c.values[0]].composite is not None]


@pytest.mark.parametrize("name,k", COMPOSITE_CASES)
def test_fused_op_matches_autograd_of_composite(name, k):
    """The hand-written backward equals the engine's autograd of the primitive composite."""
    info, sample = _sample(name, k, np.float64)
    fused_args, comp_args = info.tensors(sample), info.tensors(sample)
    fused = _flat(info.op(*fused_args, **sample.kwargs))
    comp = _flat(info.composite(*comp_args, **sample.kwargs))
    rng = np.random.default_rng(3)
    for j, (f, c) in enumerate(zip(fused, comp)):
        np.testing.assert_allclose(f.data, c.data, rtol=1e-9, atol=1e-9)
        v = rng.standard_normal(f.shape)
        f.backward(v, retain_graph=j < len(fused) - 1)
        c.backward(v, retain_graph=j < len(fused) - 1)
    for a, b in zip(fused_args, comp_args):
        if isinstance(a, tinyllm.Tensor) and a.requires_grad:
            np.testing.assert_allclose(a.grad.data, b.grad.data, rtol=1e-8, atol=1e-9)


# Public functions of tinyllm.functional that are not differentiable ops, and why.
NOT_OPS = {
    "all", "any", "eq", "ne", "lt", "le", "gt", "ge", "isfinite", "isnan", "logical_and",
    "logical_not", "logical_or",  # comparisons: boolean results, no gradient
    "argmax", "argmin",  # integer results
}  # fmt: skip


def test_every_public_op_is_registered():
    missing = set(F.__all__) - NOT_OPS - covered_names()
    assert not missing, f"public ops missing from the registry: {sorted(missing)}"


def test_every_registered_op_has_samples():
    for name, info in OPS.items():
        assert info.samples(np.random.default_rng(0), np.float64), f"{name} has no samples"


@pytest.mark.parametrize("src,dst", [(np.float32, np.float64), (np.float64, np.float32)])
def test_cast_between_float_dtypes_returns_the_gradient_in_the_input_dtype(src, dst):
    """cast's registry samples keep the dtype (the float32 run must stay float32): here the
    dtype changes, and the gradient must come back in the input's dtype."""
    x = tinyllm.tensor(np.array([[1.5, -2.0, 0.25]], dtype=src), requires_grad=True)
    y = F.cast(x, dst)
    assert y.dtype == dst
    y.backward(np.array([[1.0, 2.0, 3.0]], dtype=dst))
    assert x.grad.dtype == src
    np.testing.assert_array_equal(x.grad.numpy(), np.array([[1.0, 2.0, 3.0]], dtype=src))


# ---------------------------------------------------------------- kernel tiers
def _kernels_called(info) -> set[str]:
    """The tinyllm.kernels ops that running every float64 sample of ``info`` (forward and
    backward) called, as ``tier_counts`` records them."""
    from tinyllm import kernels

    kernels.reset_counts()
    for sample in info.samples(np.random.default_rng(0), np.float64):
        outs = _flat(_call(info, sample, info.tensors(sample)))
        for j, out in enumerate(outs):
            if out.requires_grad:
                out.backward(np.ones(out.shape), retain_graph=j < len(outs) - 1)
    return {op for op, _ in kernels.tier_counts()}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_names_exactly_the_kernels_it_calls(name):
    """An op that calls a kernel must name it, so its tiers come from the kernel layer (an op
    reporting only "reference" while running Numba fails here); a named kernel that no
    sample calls fails too (a stale name)."""
    info = OPS[name]
    called = _kernels_called(info)
    assert called <= set(info.kernels), (
        f"{name} calls kernels {sorted(called - set(info.kernels))} that its OpInfo does "
        f"not name (OpInfo.kernels={info.kernels})"
    )
    assert set(info.kernels) <= called, (
        f"{name} names kernels {sorted(set(info.kernels) - called)} that none of its samples calls"
    )
    if called:
        assert "numba" in info.tiers, f"{name} runs kernels {called} but reports {info.tiers}"


def test_op_tiers_are_read_from_the_kernel_layer():
    from tinyllm import kernels

    info = OPS["layer_norm"]
    assert info.tiers == tuple(
        t for t in kernels.TIERS
        if t in kernels.kernel_tiers("layer_norm_forward") + kernels.kernel_tiers(
            "layer_norm_backward"
        )
    )  # fmt: skip
    assert info.tiers[:2] == ("reference", "numba")
    assert OPS["add"].tiers == () and OPS["matmul"].tiers == ()


def test_opinfo_rejects_tier_names_as_kernels():
    from tinyllm.registry import OpInfo

    with pytest.raises(ValueError, match="numba"):
        OpInfo("x", F.add, lambda r, d: [], kernels=("reference", "numba"))
