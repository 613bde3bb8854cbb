"""LKD's student reuses QuantLinear's activation quantizer (no copy of its own), and a failed
LKD run gives the model back as it was (its float Linear layers, weights and mode)."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
import tinyllm.quant.lkd as lkd
from tinyllm import nn
from tinyllm.models import build_model
from tinyllm.models.config import ModelConfig
from tinyllm.quant import QuantLinear, fake_quantize_ste
from tinyllm.quant.lkd import StudentLinear, lkd_quantize
from tinyllm.quant.model import quantize_linear


def _old_fake_quant_tokens(x: np.ndarray) -> np.ndarray:
    """The forward of the ``_FakeQuantTokens`` LKD had before (in x's dtype); STE backward."""
    amax = np.abs(x).max(axis=-1, keepdims=True)
    s = np.where(amax > 0, amax / 127.0, 1.0).astype(x.dtype)
    return np.clip(np.rint(x / s), -127, 127) * s


def test_student_uses_the_quant_linear_activation_op():
    assert not hasattr(lkd, "_FakeQuantTokens")
    tinyllm.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 48)) * np.exp(rng.standard_normal((5, 1)))
    student = StudentLinear(nn.Linear(48, 16).double(), bits=4, group_size=16, act_quant=True)
    xt = tinyllm.tensor(x, requires_grad=True)
    dy = rng.standard_normal((5, 16))
    (student(xt) * tinyllm.tensor(dy)).sum().backward()
    # before: the student's own _FakeQuantTokens (float64: the same arithmetic), STE backward
    s, z, g = student.qparams()
    w_hat = fake_quantize_ste(student.weight.detach(), s, z, bits=4, group_size=g).numpy()
    xq = _old_fake_quant_tokens(x)
    want = xq @ w_hat.T + student.bias.numpy()
    np.testing.assert_array_equal(student(tinyllm.tensor(x)).detach().numpy(), want)
    np.testing.assert_array_equal(xt.grad.numpy(), dy @ w_hat)  # straight through x's codes
    np.testing.assert_array_equal(student.weight.grad.numpy(), dy.T @ xq)
    # float32: QuantLinear's op computes the codes in float64, so it moves by <= 1 ulp
    x32 = x.astype(np.float32)
    from tinyllm.quant.linear import _FakeQuantRows

    new = _FakeQuantRows.apply(tinyllm.tensor(x32), None).numpy()
    assert new.dtype == np.float32
    np.testing.assert_allclose(new, _old_fake_quant_tokens(x32), rtol=2e-7, atol=1e-7)


def test_student_activations_are_what_the_stored_layer_computes():
    """The student (latent = stored weight) and its QuantLinear give the same outputs."""
    tinyllm.manual_seed(1)
    student = StudentLinear(nn.Linear(32, 8), bits=8, group_size=None, act_quant=True)
    q = student.to_quant_linear()
    x = tinyllm.tensor(np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32))
    with tinyllm.no_grad():
        np.testing.assert_allclose(student(x).numpy(), q(x).numpy(), rtol=1e-5, atol=1e-5)


def _tiny_llama():
    cfg = ModelConfig(arch="llama", vocab_size=32, d_model=32, n_layer=2, n_head=2,
                      block_size=8)  # fmt: skip
    tinyllm.manual_seed(0)
    return build_model(cfg)


def _linear_layers(model):
    return {n: type(m).__name__ for n, m in model.named_modules() if not list(m.children())}


@pytest.mark.parametrize("where", ["after_block_0", "training_block_1"])
def test_failed_lkd_restores_the_float_model(where, monkeypatch):
    model = _tiny_llama()
    model.train()
    layers = _linear_layers(model)
    params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    idx = np.random.default_rng(3).integers(0, 32, (1, 8))
    calib = [np.random.default_rng(i).integers(0, 32, (2, 8)) for i in range(2)]
    progress = None
    if where == "after_block_0":  # block 0 is already packed when the error comes

        def progress(message):
            raise RuntimeError("stop after block 0")

        error = RuntimeError
    else:  # Ctrl-C in block 1's first training step (2 steps per block: the 3rd loss)
        calls = {"n": 0}
        original = F.mse_loss

        def interrupting(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(lkd.F, "mse_loss", interrupting)
        error = KeyboardInterrupt
    with pytest.raises(error):
        lkd_quantize(model, list(model.blocks), calib, lambda m, b: m(tinyllm.tensor(b)), 4, 16,
                     steps=2, lr=1e-2, progress=progress)  # fmt: skip
    assert _linear_layers(model) == layers  # no QuantLinear or StudentLinear is left
    assert not any(isinstance(m, (QuantLinear, StudentLinear)) for m in model.modules())
    assert model.training
    for n, p in model.named_parameters():
        assert p.requires_grad, n
        np.testing.assert_array_equal(p.detach().numpy(), params[n], err_msg=n)
    with tinyllm.no_grad():
        model.eval()
        restored = model(tinyllm.tensor(idx)).numpy()
        np.testing.assert_array_equal(restored, _tiny_llama().eval()(tinyllm.tensor(idx)).numpy())


def test_lkd_refuses_no_blocks():
    model = _tiny_llama()
    with pytest.raises(ValueError, match="lkd_quantize: blocks is empty"):
        lkd_quantize(model, [], [np.zeros((1, 8), np.int64)])


def test_quant_linear_and_lkd_share_one_token_quantizer():
    """QuantLinear(act_quant="token") computes fake_quantize_tokens(x) W_hat^T."""
    from tinyllm.quant.zeroquant import fake_quantize_tokens

    tinyllm.manual_seed(2)
    q = quantize_linear(nn.Linear(32, 8), "zeroquant", bits=4, group_size=16)
    x = np.random.default_rng(4).standard_normal((3, 32))
    want = fake_quantize_tokens(x) @ q.dequantized_weight(np.float64).T + q.bias.numpy()
    # W_hat decoded in float32 by dequantized_weight, in float64 by the kernel: 1e-6 apart
    np.testing.assert_allclose(q(tinyllm.tensor(x)).numpy(), want, rtol=1e-6, atol=1e-6)
