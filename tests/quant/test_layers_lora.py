"""QuantLinear, whole-model quantization and checkpoints, LoRA and QLoRA, the CLI parser."""

import argparse

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import nn
from tinyllm.models import ModelConfig, build_model
from tinyllm.nn.lora import LoRALinear, apply_lora, lora_parameters, merge_lora, unmerge_lora
from tinyllm.quant import QuantLinear, load_quantized, model_nbytes, quantize_model
from tinyllm.quant.model import quantize_linear, save_quantized


def tiny_llama(seed=0):
    tinyllm.manual_seed(seed)
    cfg = ModelConfig(arch="llama", vocab_size=256, d_model=64, n_layer=2, n_head=2,
                      block_size=32)  # fmt: skip
    return build_model(cfg)


@pytest.mark.parametrize("method", ["rtn", "nf4", "fp8", "llm_int8", "zeroquant"])
def test_quant_linear_matches_its_dequantized_weight(method):
    tinyllm.manual_seed(0)
    lin = nn.Linear(128, 24)
    q = quantize_linear(lin, method, bits=4, group_size=32)
    x = np.random.default_rng(0).standard_normal((2, 5, 128)).astype(np.float32)
    y = q(tinyllm.tensor(x)).detach().numpy()
    dense = x @ q.dequantized_weight().T + lin.bias.detach().numpy()
    tol = {"llm_int8": 2e-2, "zeroquant": 5e-2}.get(method, 1e-5)
    np.testing.assert_allclose(y, dense, rtol=tol, atol=tol)
    full = x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
    assert np.abs(y - full).mean() < 0.1 * np.abs(full).mean()


def test_quant_linear_gradient_reaches_x_not_the_weight():
    tinyllm.manual_seed(0)
    lin = nn.Linear(64, 8).double()
    q = quantize_linear(lin, "rtn", bits=4, group_size=16)
    before = q.qweight.qweight.copy()
    x = tinyllm.randn(3, 64, dtype="float64", requires_grad=True)
    assert tinyllm.gradcheck(lambda x: q(x), [x])
    assert list(q.parameters()) == []
    np.testing.assert_array_equal(q.qweight.qweight, before)


def calib_batches(n=2):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 64, (2, 16)) for _ in range(n)]


@pytest.mark.parametrize("method", ["gptq", "awq", "smoothquant", "nf4"])
def test_quantized_model_save_load_round_trip(method, tmp_path):
    model = tiny_llama()
    idx = tinyllm.tensor(np.random.default_rng(1).integers(0, 64, (1, 12)))
    ref = model(idx).detach().numpy()
    float_bytes = model_nbytes(model)
    quantize_model(model, method, bits=4 if method != "smoothquant" else 8, group_size=32,
                   calibration=calib_batches(), forward=lambda m, b: m(tinyllm.tensor(b)))  # fmt: skip
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 2 * 6  # lm_head stays float
    y = model(idx).detach().numpy()
    assert np.abs(y - ref).mean() < 0.2 * np.abs(ref).mean()
    assert model_nbytes(model) < float_bytes
    (tmp_path / "config.json").write_text(
        '{"arch": "llama", "d_model": 64, "n_layer": 2, "n_head": 2, "seq_len": 32}'
    )
    save_quantized(model, tmp_path / "checkpoint.safetensors", {"vocab_size": 256})
    loaded = load_quantized(tmp_path)
    np.testing.assert_array_equal(loaded(idx).detach().numpy(), y)
    # the lean decoder (generate) reads .weight: it works on the quantized model
    out = loaded.generate(idx, 3, temperature=0)
    assert out.shape == (1, 15)


def test_lora_starts_at_base_and_merge_equals_unmerged():
    tinyllm.manual_seed(0)
    base = nn.Linear(20, 12)
    layer = LoRALinear(base, r=4, alpha=8)
    x = tinyllm.randn(5, 20)
    np.testing.assert_array_equal(
        layer(x).detach().numpy(), base(x).detach().numpy()
    )  # B = 0 at init
    layer.lora_B.data = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    unmerged = layer(x).detach().numpy()
    w0 = base.weight.detach().numpy().copy()
    layer.merge()
    np.testing.assert_allclose(layer(x).detach().numpy(), unmerged, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(base.weight.detach().numpy(),
                               w0 + 2.0 * layer.lora_B.data @ layer.lora_A.data, rtol=1e-6)  # fmt: skip
    layer.unmerge()
    np.testing.assert_allclose(base.weight.detach().numpy(), w0, atol=1e-6)
    np.testing.assert_allclose(layer(x).detach().numpy(), unmerged, rtol=1e-5, atol=1e-5)


def test_lora_gradcheck_and_trainable_count():
    tinyllm.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    names = apply_lora(model, r=2, alpha=4)
    assert names == ["0", "2"]
    params = lora_parameters(model)
    assert sum(p.numel() for p in params) == 2 * (6 + 5) + 2 * (5 + 3)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_B.data = np.random.default_rng(1).standard_normal(m.lora_B.shape)
    x = tinyllm.randn(4, 6, dtype="float64", requires_grad=True)
    assert tinyllm.gradcheck(lambda x: model(x), [x])
    # dA, dB against their closed forms on the first layer: y = base(x) + s x A^T B^T
    layer = dict(model.named_modules())["0"]
    model.zero_grad()
    dy = np.random.default_rng(2).standard_normal((4, 5))
    layer(x).backward(dy)
    A, B, xs = layer.lora_A.data, layer.lora_B.data, x.detach().numpy()
    np.testing.assert_allclose(
        layer.lora_B.grad.detach().numpy(), 2.0 * dy.T @ (xs @ A.T), rtol=1e-10
    )
    np.testing.assert_allclose(
        layer.lora_A.grad.detach().numpy(), 2.0 * (dy @ B).T @ xs, rtol=1e-10
    )
    assert layer.base.weight.grad is None


def test_qlora_loss_falls_and_nf4_base_stays_bit_identical():
    model = tiny_llama()
    quantize_model(model, "nf4")
    for p in model.parameters():
        p.requires_grad = False
    apply_lora(model, r=4, alpha=8, dropout=0.05)
    frozen = {n: m.qweight.packed.copy() for n, m in model.named_modules()
              if isinstance(m, QuantLinear)}  # fmt: skip
    frozen_scales = {n: m.qweight.absmax_codes.copy() for n, m in model.named_modules()
                     if isinstance(m, QuantLinear)}  # fmt: skip
    others = {n: p.detach().numpy().copy() for n, p in model.named_parameters()
              if not p.requires_grad}  # fmt: skip
    text = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 4, np.uint8)
    x = tinyllm.tensor(text[None, :32].astype(np.int64))
    y = tinyllm.tensor(text[1:33].astype(np.int64))
    opt = tinyllm.optim.AdamW(lora_parameters(model), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x).reshape(32, 256), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    for n, m in model.named_modules():
        if isinstance(m, QuantLinear):
            np.testing.assert_array_equal(m.qweight.packed, frozen[n])
            np.testing.assert_array_equal(m.qweight.absmax_codes, frozen_scales[n])
    for n, p in model.named_parameters():
        if n in others:
            np.testing.assert_array_equal(p.detach().numpy(), others[n])
            assert p.grad is None
    with pytest.raises(TypeError):
        merge_lora(model)
    unmerge_lora(model)  # a no-op on unmerged layers


def test_quantize_cli_parser_and_run(tmp_path, capsys):
    from tinyllm.cli import quantize_cmd

    parser = argparse.ArgumentParser(prog="tinyllm")
    quantize_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["quantize", "runs/x", "--method", "gptq", "--bits", "4",
                              "--group-size", "128"])  # fmt: skip
    assert (args.method, args.bits, args.group_size) == ("gptq", 4, 128)
    # a tiny run folder, quantized by the command, loads
    from tinyllm.io.checkpoint import save_checkpoint

    model = tiny_llama()
    run = tmp_path / "tiny"
    run.mkdir()
    (run / "config.json").write_text(
        '{"arch": "llama", "d_model": 64, "n_layer": 2, "n_head": 2, "seq_len": 32}'
    )
    arrays = {f"model.{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    save_checkpoint(run / "checkpoint.safetensors", arrays, {"step": 0})
    args = parser.parse_args(["quantize", str(run), "--method", "rtn", "--group-size", "32"])
    assert args.func(args) == 0
    out = tmp_path / "tiny-rtn-w4g32"
    assert (out / "quant.json").is_file()
    loaded = load_quantized(out)
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == 12
