"""What `generate` (and so `tinyllm sample`) computes on a quantized model.

``generate`` decodes with the lean KV-cached decoder (models/decoder.py). Its projections of a
quantized layer call the layer's own forward: the packed dequantize-and-multiply kernels (no
float weight copy) and the activation quantization of ZeroQuant and SmoothQuant, so cached
decoding computes what the module path computes. LLM.int8() picks outlier columns over all
rows of a call (a token's output depends on the other tokens), so the decoder refuses it and
``generate`` decodes by the uncached module path. The README's Quantization section states
both."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models import build_model
from tinyllm.models.config import ModelConfig
from tinyllm.models.decoder import Decoder
from tinyllm.quant import QuantLinear, quantize_model


def _pair(method, bits):
    tinyllm.manual_seed(0)
    model = build_model(ModelConfig(arch="llama", vocab_size=64, d_model=64, n_layer=2,
                                    n_head=4, block_size=32))  # fmt: skip
    calib = [np.random.default_rng(i).integers(0, 64, (2, 16)) for i in range(2)]
    quantize_model(model, method, bits, 32, calibration=calib,
                   forward=lambda m, b: m(tinyllm.tensor(b)))  # fmt: skip
    model.eval()
    idx = np.random.default_rng(9).integers(0, 64, (1, 12))
    return model, idx


def _module_logits(model, idx):
    with tinyllm.no_grad():
        return model(tinyllm.tensor(idx)).numpy()[0, -1].astype(np.float64)


def _lean_logits(model, idx):
    return Decoder(model, 1, 32).prefill(idx)[0].astype(np.float64)


@pytest.mark.parametrize(
    "method,bits",
    [("rtn", 4), ("gptq", 4), ("awq", 4), ("nf4", 4), ("zeroquant", 4), ("smoothquant", 8)],
)
def test_cached_decoding_runs_the_quantized_layers(method, bits):
    model, idx = _pair(method, bits)
    decoder = Decoder(model, 1, 32)
    assert all(type(layer["qkv"]).__name__ == "_Quantized" for layer in decoder.layers)
    module, lean = _module_logits(model, idx), _lean_logits(model, idx)
    # the same layers on the same rows; only the attention's summation order differs
    np.testing.assert_allclose(lean, module, rtol=1e-5, atol=1e-5 * np.abs(module).max())
    cached = model.generate(tinyllm.tensor(idx), 8, temperature=0).numpy()
    uncached = model.generate(tinyllm.tensor(idx), 8, temperature=0, use_cache=False).numpy()
    np.testing.assert_array_equal(cached, uncached)
    if model.blocks[0].attn.q_proj.act_quant is not None:
        # the activation quantization matters: switched off, the logits move by far more
        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.act_quant = None
        assert np.abs(_lean_logits(model, idx) - module).max() > 1e-3 * np.abs(module).max()


def test_llm_int8_samples_by_the_module_path():
    """LLM.int8() is refused by the cached decoder; generate takes the uncached forward."""
    model, idx = _pair("llm_int8", 8)
    why = Decoder.unsupported(model)
    assert why is not None and why.startswith("layer 0:") and "outlier" in why
    with pytest.raises(ValueError, match="cannot decode with a KV cache"):
        Decoder(model, 1, 32)
    out = model.generate(tinyllm.tensor(idx), 6, temperature=0).numpy()[0]
    ids = list(idx[0])
    for _ in range(6):  # greedy by the module path, one full forward per token
        ids.append(int(np.argmax(_module_logits(model, np.array([ids])))))
    assert out.tolist() == ids
