"""wkv4 (RWKV-4) beyond the registry's checks: the max trick keeps keys shifted by 800
finite and equal to unshifted ones (the naive form overflows there), a long sequence matches
the O(T^2) definition, a float64 gradcheck at a large shift, float32 agrees with float64,
bad input is refused by name."""

import numpy as np
import pytest

import tinyllm
from tinyllm.functional import wkv4
from tinyllm.functional.rwkv import wkv4_step
from tinyllm.registry.long_context import _wkv_ref


def _args(rng, B=2, T=16, C=3):
    return (
        rng.standard_normal(C) * 0.5,
        rng.standard_normal(C) * 0.5,
        rng.standard_normal((B, T, C)),
        rng.standard_normal((B, T, C)),
    )


def _run(arrays, cot):
    ts = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
    out = wkv4(*ts)
    out.backward(tinyllm.tensor(cot))
    return out.data, [t.grad.data for t in ts]


def test_keys_shifted_by_800_equal_unshifted():
    rng = np.random.default_rng(0)
    td, tf, k, v = _args(rng)
    cot = rng.standard_normal(k.shape)
    out, grads = _run((td, tf, k, v), cot)
    out8, grads8 = _run((td, tf, k + 800.0, v), cot)
    assert np.isfinite(out8).all() and all(np.isfinite(g).all() for g in grads8)
    # wkv is invariant under k -> k + c; float64 rounding of k + 800 (ulp 1e-13): 1e-10
    np.testing.assert_allclose(out8, out, rtol=1e-10, atol=1e-10)
    for g, g8 in zip(grads, grads8):
        np.testing.assert_allclose(g8, g, rtol=1e-9, atol=1e-9)
    with np.errstate(over="ignore", invalid="ignore"):  # the naive form cannot do this
        assert not np.isfinite(_wkv_ref(td, tf, k + 800.0, v)).all()


def test_long_sequence_equals_definition():
    rng = np.random.default_rng(1)
    td, tf, k, v = _args(rng, B=1, T=200, C=4)
    td[:2] = -4.0  # w = -exp(-4): a slow decay, long memory
    # float64, exps of O(1) terms summed in another order: 1e-10
    np.testing.assert_allclose(
        wkv4(*(tinyllm.tensor(a) for a in (td, tf, k, v))).data,
        _wkv_ref(td, tf, k, v),
        rtol=1e-10,
        atol=1e-10,
    )


def test_gradcheck_float64_with_shifted_keys():
    rng = np.random.default_rng(2)
    td, tf, k, v = _args(rng, B=1, T=7, C=2)
    ts = [tinyllm.tensor(a, requires_grad=True) for a in (td, tf, k + 800.0, v)]
    assert tinyllm.gradcheck(wkv4, ts)


def test_float32_matches_float64_at_shift_800():
    rng = np.random.default_rng(3)
    arrays = _args(rng, T=40)
    arrays = arrays[:2] + (arrays[2] + 800.0, arrays[3])
    cot = rng.standard_normal(arrays[2].shape)
    out64, g64 = _run(arrays, cot)
    out32, g32 = _run([a.astype(np.float32) for a in arrays], cot.astype(np.float32))
    assert out32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32)
    # k + 800 in float32 has an ulp of 6e-5, which moves each e^k by that much relatively
    # (measured: 4e-5 on the output, 5e-5 of the largest gradient): 3e-4
    np.testing.assert_allclose(out32, out64, rtol=3e-4, atol=3e-4)
    for a, b in zip(g32, g64):
        np.testing.assert_allclose(a, b, rtol=3e-4, atol=3e-4 * np.abs(b).max())


def test_bad_input_is_named():
    c = tinyllm.zeros(3)
    x = tinyllm.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="wkv4: k must be"):
        wkv4(c, c, tinyllm.zeros(4, 3), tinyllm.zeros(4, 3))
    with pytest.raises(ValueError, match="wkv4: v of shape"):
        wkv4(c, c, x, tinyllm.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"wkv4: time_first must have shape \(3,\)"):
        wkv4(c, tinyllm.zeros(4), x, x)
    with pytest.raises(TypeError, match="wkv4: all inputs"):
        wkv4(c, c, x, tinyllm.zeros(2, 4, 3, dtype="float64"))


@pytest.mark.parametrize("shift", [0.0, 800.0])
def test_step_mode_equals_full_at_every_position(shift):
    rng = np.random.default_rng(5)
    td, tf, k, v = _args(rng, B=2, T=15, C=3)
    k = k + shift
    full = wkv4(*(tinyllm.tensor(a) for a in (td, tf, k, v))).data
    state, steps = None, []
    for t in range(15):
        y, state = wkv4_step(tinyllm.tensor(td), tinyllm.tensor(tf), k[:, t], v[:, t], state)
        steps.append(y)
    # the same arithmetic in the same order: 1e-13
    np.testing.assert_allclose(np.stack(steps, axis=1), full, rtol=1e-13, atol=1e-13)


def test_gradients_match_torch_autograd_of_the_definition():
    """Optional peer oracle: PyTorch's autograd of the O(T^2) definition."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    arrays = _args(rng, B=2, T=9, C=3)
    cot = rng.standard_normal(arrays[2].shape)
    out, grads = _run(arrays, cot)
    td, tf, k, v = (torch.tensor(a, requires_grad=True) for a in arrays)
    w = -torch.exp(td)
    T = k.shape[1]
    i = torch.arange(T, dtype=torch.float64)
    # e^{(t-1-i) w + k_i} for i < t, e^{u + k_t} on the diagonal, 0 above: [B, t, i, C]
    expo = (i[:, None] - 1 - i[None, :])[None, :, :, None] * w + k[:, None, :, :]
    expo = torch.where((i[:, None] > i[None, :])[None, :, :, None], expo, -torch.inf)
    diag = torch.diag_embed((tf + k).transpose(1, 2)).transpose(1, 3)  # [B, t, i, C]
    eye = torch.eye(T, dtype=torch.bool)[None, :, :, None]
    e = torch.exp(torch.where(eye, diag, expo))
    ref = (e * v[:, None]).sum(2) / e.sum(2)
    ref.backward(torch.tensor(cot))
    # float64, another library's summation order: 1e-10
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    for g, t in zip(grads, (td, tf, k, v)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-10)
