"""tinyllm.quant: quantization schemes, methods, packed layers and quantized checkpoints.

Schemes (``schemes``, ``nf4``, ``fp8``): absmax and zero-point INT-b per tensor / channel /
group with codes packed into bytes; NF4 with double quantization; FP8 E4M3/E5M2.
Methods: round-to-nearest, GPTQ (``gptq``), AWQ (``awq``), SmoothQuant (``smoothquant``),
LLM.int8() (``llm_int8``), ZeroQuant (``zeroquant``; its layer-by-layer distillation:
``lkd``). Layers: ``QuantLinear`` over a packed
weight, on the kernel ``tinyllm.kernels.quant.dequant_matmul`` (reference / Numba / CUDA).
Whole models: ``quantize_model``, ``save_quantized``, ``load_quantized``;
``quantize_pretrained`` for the MiniLM sentence encoder. LoRA/QLoRA: ``tinyllm.nn.lora``.

>>> import numpy as np
>>> from tinyllm.quant import quantize_weight
>>> q = quantize_weight(np.array([[0.5, -1.0, 0.25, 1.0]]), bits=4, granularity="channel")
>>> q.dequantize().round(3).tolist()
[[0.571, -1.0, 0.286, 1.0]]
"""

from tinyllm.quant.awq import awq_clip, awq_quantize, awq_scale_search
from tinyllm.quant.fp8 import FP8Tensor, fp8_decode, fp8_encode, fp8_round, quantize_fp8
from tinyllm.quant.gptq import HessianAccumulator, gptq_quantize
from tinyllm.quant.linear import QuantLinear, dequant_linear
from tinyllm.quant.lkd import fake_quantize_ste, lkd_quantize
from tinyllm.quant.llm_int8 import Int8Weight, llm_int8_matmul, quantize_int8_rows
from tinyllm.quant.model import (
    METHODS,
    load_quantized,
    model_nbytes,
    quantize_linear,
    quantize_model,
    save_quantized,
)
from tinyllm.quant.nf4 import NF4_LEVELS, NF4Weight, dequantize_nf4, nf4_levels, quantize_nf4
from tinyllm.quant.pretrained import quantize_pretrained, save_quantized_pretrained
from tinyllm.quant.schemes import (
    QuantizedWeight,
    compute_qparams,
    fake_quantize,
    pack_codes,
    quantize_weight,
    unpack_codes,
)
from tinyllm.quant.smoothquant import smooth_scales, smooth_weight
from tinyllm.quant.zeroquant import fake_quantize_tokens

__all__ = [
    "FP8Tensor", "HessianAccumulator", "Int8Weight", "METHODS", "NF4_LEVELS", "NF4Weight",
    "QuantLinear", "QuantizedWeight", "awq_clip", "awq_quantize", "awq_scale_search",
    "compute_qparams", "dequant_linear", "dequantize_nf4", "fake_quantize", "fake_quantize_ste",
    "fake_quantize_tokens", "fp8_decode", "fp8_encode", "fp8_round", "gptq_quantize",
    "lkd_quantize", "llm_int8_matmul", "load_quantized", "model_nbytes", "nf4_levels",
    "pack_codes",
    "quantize_fp8", "quantize_int8_rows", "quantize_linear", "quantize_model", "quantize_nf4",
    "quantize_pretrained", "quantize_weight", "save_quantized", "save_quantized_pretrained",
    "smooth_scales", "smooth_weight", "unpack_codes",
]  # fmt: skip
