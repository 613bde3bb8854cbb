"""ZeroQuant's layer-by-layer distillation (LKD): the straight-through fake quantizer, and LKD
against plain ZeroQuant (RTN group-wise) on held-out activations of a small Llama."""

import copy

import numpy as np
import pytest

import tinyllm
from tinyllm.models import build_model
from tinyllm.models.config import ModelConfig
from tinyllm.quant import QuantLinear, model_nbytes, quantize_model, schemes
from tinyllm.quant.lkd import capture_block_inputs, fake_quantize_ste, lkd_quantize


def _weights_off_boundaries(rng, scale, g, K, span):
    """s (k + u), |u| <= 0.4: no value near a rounding boundary (float32 = float64 codes)."""
    s = np.repeat(scale, g, axis=1)[:, :K]
    k = rng.integers(-span, span, s.shape)
    return (k + rng.uniform(-0.4, 0.4, s.shape)) * s


def test_fake_quantize_ste_forward_is_the_schemes_round_trip():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 20))
    s, z, g = schemes.compute_qparams(W, 4, "group", 8, symmetric=True)
    out = fake_quantize_ste(tinyllm.tensor(W), s, z, bits=4, group_size=g)
    # schemes computes w_hat in float32 (as the kernels do): float32 rounding, 1e-6 relative
    np.testing.assert_allclose(out.numpy(), schemes.fake_quantize(W, 4, "group", 8, True),
                               rtol=1e-6, atol=1e-7)  # fmt: skip


def test_ste_gradient_is_identity_inside_the_clip_range_and_zero_outside():
    rng = np.random.default_rng(1)
    N, K, g, bits = 5, 12, 4, 4
    scale = rng.uniform(0.5, 1.5, (N, K // g))
    zero = rng.integers(0, 16, (N, K // g)).astype(np.float64)
    W = _weights_off_boundaries(rng, scale, g, K, 24)  # codes from -24 + z: many clamp
    w = tinyllm.tensor(W, requires_grad=True)
    dy = rng.standard_normal((N, K))
    (
        fake_quantize_ste(w, scale, zero, bits=bits, group_size=g) * tinyllm.tensor(dy)
    ).sum().backward()
    codes = np.rint(W / np.repeat(scale, g, axis=1)) + np.repeat(zero, g, axis=1)
    inside = (codes >= 0) & (codes <= 2**bits - 1)
    assert 0.2 < inside.mean() < 0.8  # both branches are exercised
    np.testing.assert_array_equal(w.grad.numpy(), np.where(inside, dy, 0.0))


def test_ste_matches_torch_fake_quantize_per_channel():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    N, K, g, bits = 4, 16, 8, 4
    scale = rng.uniform(0.5, 1.5, (N, K // g)).astype(np.float32)
    zero = rng.integers(0, 16, (N, K // g))
    W = _weights_off_boundaries(rng, scale, g, K, 20).astype(np.float32)
    dy = rng.standard_normal((N, K)).astype(np.float32)
    w = tinyllm.tensor(W, requires_grad=True)
    out = fake_quantize_ste(w, scale, zero.astype(np.float32), bits=bits, group_size=g)
    (out * tinyllm.tensor(dy)).sum().backward()
    # torch's per-channel rule on rows of g columns = the per-group rule
    tw = torch.tensor(W.reshape(-1, g), requires_grad=True)
    tout = torch.fake_quantize_per_channel_affine(
        tw, torch.tensor(scale.reshape(-1)), torch.tensor(zero.reshape(-1), dtype=torch.int32),
        0, 0, 2**bits - 1,
    )  # fmt: skip
    (tout * torch.tensor(dy.reshape(-1, g))).sum().backward()
    # torch multiplies by 1/s where we divide by s: off boundaries the codes agree, so only
    # float32 rounding of s (q - z) differs
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy().reshape(N, K), rtol=1e-6,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(w.grad.numpy(), tw.grad.numpy().reshape(N, K))


def test_fake_quantize_ste_rejects_bad_shapes_by_name():
    with pytest.raises(ValueError, match=r"fake_quantize_ste: scale and zero must be \[N, G\]"):
        fake_quantize_ste(tinyllm.tensor(np.ones((2, 8))), np.ones((2, 3)), np.zeros((2, 3)),
                          bits=4, group_size=4)  # fmt: skip


@pytest.fixture(scope="module")
def small_llama():
    """A small Llama trained for a few steps (random weights have no structure to keep)."""
    cfg = ModelConfig(arch="llama", vocab_size=64, d_model=64, n_layer=2, n_head=4,
                      block_size=32)  # fmt: skip
    rng = np.random.default_rng(0)
    tinyllm.manual_seed(0)
    model = build_model(cfg)
    opt = tinyllm.optim.AdamW(model.parameters(), lr=3e-3)
    seq = rng.integers(0, 64, 400)  # a fixed random "text": windows of it are learnable
    for _ in range(30):
        starts = rng.integers(0, len(seq) - 33, 8)
        batch = np.stack([seq[s : s + 33] for s in starts])
        logits = model(tinyllm.tensor(batch[:, :-1]))
        loss = tinyllm.functional.cross_entropy(logits.reshape(-1, 64),
                                                tinyllm.tensor(batch[:, 1:].reshape(-1)))  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    windows = [np.stack([seq[s : s + 32] for s in rng.integers(0, len(seq) - 32, 4)])
               for _ in range(6)]  # fmt: skip
    return model, windows[:4], windows[4:]


def _forward(m, b):
    return m(tinyllm.tensor(b))


def _block_mse(teacher, student, batches):
    """Per block: MSE of the student block against the teacher block on the teacher's inputs."""
    out = []
    for tb, sb in zip(teacher.blocks, student.blocks):
        errs = []
        for x, a, k in capture_block_inputs(teacher, tb, batches, _forward):
            with tinyllm.no_grad():
                y = tb(tinyllm.tensor(x), *a, **k).numpy().astype(np.float64)
                e = sb(tinyllm.tensor(x), *a, **k).numpy()
            errs.append(np.mean((e - y) ** 2))
        out.append(float(np.mean(errs)))
    return np.array(out)


def test_lkd_lowers_heldout_block_mse_against_plain_zeroquant(small_llama):
    teacher, calib, heldout = small_llama
    plain = quantize_model(copy.deepcopy(teacher), "zeroquant", 4, 32)
    lkd = quantize_model(copy.deepcopy(teacher), "zeroquant", 4, 32, calibration=calib,
                         forward=_forward, lkd_steps=40, lkd_lr=3e-4)  # fmt: skip
    # the same packed format, only other codes
    layers = [m for m in lkd.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.method == "zeroquant" and m.act_quant == "token" for m in layers)
    assert model_nbytes(lkd) == model_nbytes(plain)
    mse_plain = _block_mse(teacher, plain, heldout)
    mse_lkd = _block_mse(teacher, lkd, heldout)
    # measured: LKD at 0.43 and 0.48 of plain ZeroQuant's error (blocks 0, 1); 0.8 is the margin
    assert np.all(mse_lkd < 0.8 * mse_plain), (mse_lkd, mse_plain)


def test_lkd_report_starts_at_plain_zeroquant_and_steps_zero_is_plain(small_llama):
    teacher, calib, heldout = small_llama
    model = copy.deepcopy(teacher)
    model, reports = lkd_quantize(model, list(model.blocks), calib, _forward, 4, 32, steps=0,
                                  heldout=heldout)  # fmt: skip
    plain = quantize_model(copy.deepcopy(teacher), "zeroquant", 4, 32)
    for a, b in zip(model.modules(), plain.modules()):
        if isinstance(a, QuantLinear):
            np.testing.assert_array_equal(a.qweight.qweight, b.qweight.qweight)
    mse_plain = _block_mse(teacher, plain, heldout)
    # the student's fake-quant forward (float32) vs QuantLinear (float64 activation codes,
    # the packed kernel): the same codes, float32 rounding apart
    for r, m in zip(reports, mse_plain):
        assert r["heldout_mse_rtn"] == pytest.approx(m, rel=1e-3)


def test_lkd_needs_calibration_and_zeroquant(small_llama):
    teacher, calib, _ = small_llama
    with pytest.raises(ValueError, match="needs calibration"):
        quantize_model(copy.deepcopy(teacher), "zeroquant", 4, 32, lkd_steps=5)
    with pytest.raises(ValueError, match="LKD, not for 'rtn'"):
        quantize_model(copy.deepcopy(teacher), "rtn", 4, 32, calibration=calib, lkd_steps=5)
