"""Quantized linear layers that hold packed weights, and their differentiable matmul.

``dequant_linear(x, packed, scales, zeros, table, bias, bits=, group_size=)`` is one Function:

    forward:   y = x W_hat^T + b,  W_hat[n, k] = (table[q_nk] - z[n, k//g]) s[n, k//g]
               (the kernel ``tinyllm.kernels.quant.dequant_matmul`` decodes the packed codes
               on the fly: no float copy of W is kept)
    backward:  dx = dy W_hat        (W_hat decoded for the product, then dropped)
               db = sum_rows dy
               no gradient for the codes, scales, zeros or table: the weight is frozen,

which is what QLoRA needs: the gradient flows *through* the frozen quantized weight into the
layers before it (and into LoRA adapters beside it), and the weight never changes.

``QuantLinear`` wraps one stored weight -- ``QuantizedWeight`` (INT2/4/8, RTN, GPTQ, AWQ,
ZeroQuant, SmoothQuant), ``NF4Weight`` (NF4, double quantization), ``FP8Tensor`` (E4M3/E5M2),
all on the packed kernel; ``Int8Weight`` (LLM.int8()) runs its mixed decomposition -- plus:

- ``input_scale`` s [K] (AWQ, SmoothQuant): the layer computes (x / s) W_hat^T, W_hat
  quantized from W diag(s);
- ``act_quant`` ("token": ZeroQuant/SmoothQuant dynamic per-token INT8; "tensor": static,
  with ``act_absmax`` from calibration): x is quantized before the matmul (its gradient passes
  straight through);
- ``threshold`` (LLM.int8()): the outlier threshold of the decomposition.

``layer.weight`` returns the dequantized float weight as a Tensor (W_hat / s when there is an
input scale) for code that wants a float matrix (the lean decoder of ``tinyllm.models`` calls
``layer(x)`` instead, on every device); ``layer(x)`` never builds it.

Devices: the operands ``layer(x)`` computes with -- ``packed``, ``scales``, ``zeros``, ``table``
and ``inv_input_scale`` (1 / s) -- are non-persistent buffers, so ``Module.to`` moves them with
the bias (and a dtype cast converts the float ones, as for any buffer; the codes stay uint8).
They are not in ``state_dict``: the checkpoint format (``tinyllm.quant.model``) stores
``qweight``'s own arrays, which stay on the host with ``input_scale``.
"""

from __future__ import annotations

import numpy as np

from tinyllm import backend
from tinyllm.function import Function
from tinyllm.kernels.quant import dequant_matmul, dequantize_packed
from tinyllm.nn.module import Module
from tinyllm.quant.fp8 import FP8Tensor, fp8_decode
from tinyllm.quant.llm_int8 import Int8Weight, llm_int8_matmul
from tinyllm.quant.nf4 import NF4_LEVELS, NF4Weight
from tinyllm.quant.schemes import QuantizedWeight
from tinyllm.quant.zeroquant import fake_quantize_tokens
from tinyllm.tensor import Tensor

__all__ = ["QuantLinear", "dequant_linear", "packed_operands"]


class DequantLinear(Function):
    """y = x W_hat^T + b for a packed W (math in the module docstring)."""

    @staticmethod
    def forward(ctx, x, packed, scales, zeros, table, bias, bits, group_size):
        ctx.save_for_backward(packed, scales, zeros, table)  # the packed weight [N, Kb] + consts
        ctx.bits, ctx.group_size, ctx.K = bits, group_size, x.shape[-1]
        y = dequant_matmul(x, packed, scales, zeros, table, bits, group_size)
        if bias is not None:
            y = y + bias.astype(y.dtype, copy=False)
        return y

    @staticmethod
    def backward(ctx, dy):
        packed, scales, zeros, table = ctx.saved_tensors
        dx = db = None
        if ctx.needs_input_grad[0]:
            # y = x W_hat^T  =>  dx = dy W_hat
            dt = dy.dtype
            z = zeros if zeros is not None else scales * 0
            w = dequantize_packed(packed, scales.astype(dt), z.astype(dt), table.astype(dt),
                                  ctx.bits, ctx.group_size, ctx.K)  # fmt: skip
            dx = dy @ w
        if ctx.needs_input_grad[5]:
            # y = ... + b  =>  db = dy summed over every leading dim
            db = dy.reshape(-1, dy.shape[-1]).sum(axis=0)
        return dx, None, None, None, None, db, None, None


def dequant_linear(input, packed, scales, zeros, table, bias=None, *, bits: int, group_size: int):
    """``input @ W_hat.T + bias`` for a packed weight (see ``tinyllm.kernels.quant``).

    >>> import numpy as np, tinyllm
    >>> packed = np.array([[0x12]], dtype=np.uint8)         # W = [[1, 2]] as 4-bit codes
    >>> ones, zero = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    >>> table = np.arange(16, dtype=np.float32)
    >>> dequant_linear(tinyllm.tensor([[1.0, 1.0]]), packed, ones, zero, table, bits=4,
    ...                group_size=2)
    tensor([[3.]])
    """
    x = input if isinstance(input, Tensor) else Tensor(np.asarray(input))
    K = x.shape[-1]
    N = packed.shape[0]
    if bias is not None and tuple(bias.shape) != (N,):
        raise ValueError(f"dequant_linear: bias of shape {tuple(bias.shape)} does not match N={N}")
    if packed.ndim != 2 or packed.shape[1] != -(-K * bits // 8):
        raise ValueError(
            f"dequant_linear: packed {tuple(packed.shape)} does not hold rows of K={K} codes "
            f"of {bits} bits"
        )
    return DequantLinear.apply(x, packed, scales, zeros, table, bias, int(bits), int(group_size))


class _FakeQuantRows(Function):
    """x through per-row (or static per-tensor) INT8 and back (``fake_quantize_tokens``, on
    x's device); backward: identity (STE). Also LKD's student activations (``lkd``)."""

    @staticmethod
    def forward(ctx, x, absmax):
        return fake_quantize_tokens(x, absmax)

    @staticmethod
    def backward(ctx, dy):
        return dy, None  # straight through: the rounding's derivative taken as 1


class _MixedInt8(Function):
    """LLM.int8() forward; backward dx = dy W_hat (the frozen int8 weight, dequantized)."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        rows = backend.to_numpy(x.reshape(-1, x.shape[-1]))
        y = llm_int8_matmul(rows, layer.qweight, layer.threshold)
        xp = backend.get_array_module(x)
        return xp.asarray(y, dtype=x.dtype).reshape(x.shape[:-1] + (y.shape[-1],))

    @staticmethod
    def backward(ctx, dy):
        w = ctx.layer.qweight.dequantize(dy.dtype)
        return dy @ backend.get_array_module(dy).asarray(w), None


_FP8_TABLES: dict[str, np.ndarray] = {}


def packed_operands(
    weight,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, int, int]:
    """(packed [N, Kb], scales [N, G], zeros [N, G] or None, table, bits, group_size)."""
    if isinstance(weight, QuantizedWeight):
        table = np.arange(2**weight.bits, dtype=np.float32)
        zeros = weight.zeros.astype(np.float32)
        return weight.qweight, weight.scales, zeros, table, weight.bits, weight.group_size
    if isinstance(weight, NF4Weight):
        N, K = weight.shape
        if K % weight.blocksize:
            raise ValueError(f"NF4 layer: K={K} must be a multiple of blocksize {weight.blocksize}")
        scales = weight.block_scales().reshape(N, K // weight.blocksize)
        return weight.packed.reshape(N, K // 2), scales, None, NF4_LEVELS, 4, weight.blocksize
    if isinstance(weight, FP8Tensor):
        if weight.fmt not in _FP8_TABLES:
            decoded = fp8_decode(np.arange(256, dtype=np.uint8), weight.fmt)
            _FP8_TABLES[weight.fmt] = np.nan_to_num(decoded, nan=0.0, posinf=0.0, neginf=0.0)
        N, K = weight.codes.shape
        scales = np.broadcast_to(weight.scale.reshape(-1, 1), (N, 1))
        return weight.codes, np.ascontiguousarray(scales), None, _FP8_TABLES[weight.fmt], 8, K
    raise TypeError(f"no packed kernel for a {type(weight).__name__}")


class QuantLinear(Module):
    """A frozen linear layer y = x W_hat^T + b over a packed quantized weight."""

    # the packed kernel's operands, registered as non-persistent buffers (moved by ``to``);
    # ``inv_input_scale`` (1 / input_scale) is one too
    PACKED_BUFFERS = ("packed", "scales", "zeros", "table")

    def __init__(
        self,
        qweight,
        bias: np.ndarray | None = None,
        input_scale: np.ndarray | None = None,
        act_quant: str | None = None,
        act_absmax: float | None = None,
        threshold: float | None = None,
        method: str = "rtn",
    ) -> None:
        super().__init__()
        if act_quant not in (None, "token", "tensor"):
            raise ValueError(
                f"QuantLinear: act_quant must be None, 'token' or 'tensor', got {act_quant!r}"
            )
        if act_quant == "tensor" and act_absmax is None:
            raise ValueError("QuantLinear: static per-tensor activations need act_absmax")
        self.qweight = qweight
        self.method = method
        shape = qweight.shape if not isinstance(qweight, FP8Tensor) else qweight.codes.shape
        self.out_features, self.in_features = int(shape[0]), int(shape[1])
        self.register_buffer("bias", None if bias is None else Tensor(np.asarray(bias, np.float32)))
        self.input_scale = None if input_scale is None else np.asarray(input_scale, np.float32)
        self.act_quant, self.act_absmax, self.threshold = act_quant, act_absmax, threshold
        self._register_operands()

    def _register_operands(self) -> None:
        """The kernel's operands as non-persistent buffers (``PACKED_BUFFERS``), so that
        ``Module.to`` moves them; an LLM.int8() layer computes from ``qweight`` (None here)."""
        ops = None if isinstance(self.qweight, Int8Weight) else packed_operands(self.qweight)
        arrays = (None,) * 4 if ops is None else ops[:4]
        self._bits, self._group_size = (0, 0) if ops is None else (int(ops[4]), int(ops[5]))
        for name, array in zip(self.PACKED_BUFFERS, arrays):
            tensor = None if array is None else Tensor(array)
            self.register_buffer(name, tensor, persistent=False)
        inv = None if self.input_scale is None else Tensor(1.0 / self.input_scale)  # float32
        self.register_buffer("inv_input_scale", inv, persistent=False)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"QuantLinear: input of shape {tuple(x.shape)} does not match in_features="
                f"{self.in_features}"
            )
        if self.inv_input_scale is not None:
            x = x * Tensor(self.inv_input_scale.data.astype(x.dtype, copy=False))
        if self.act_quant is not None:
            x = _FakeQuantRows.apply(x, self.act_absmax if self.act_quant == "tensor" else None)
        bias = None
        if self.bias is not None:
            bias = (
                self.bias if self.bias.dtype == x.dtype else Tensor(self.bias.data.astype(x.dtype))
            )
        if isinstance(self.qweight, Int8Weight):
            y = _MixedInt8.apply(x, self)
            return y if bias is None else y + bias
        zeros = None if self.zeros is None else self.zeros.data
        return DequantLinear.apply(x, self.packed.data, self.scales.data, zeros, self.table.data,
                                   bias, self._bits, self._group_size)  # fmt: skip

    # ------------------------------------------------------------------ views
    def dequantized_weight(self, dtype=np.float32) -> np.ndarray:
        """W_hat [N, K] as the layer applies it to x (divided by the input scale if any)."""
        w = self.qweight.dequantize(np.float32)
        if self.input_scale is not None:
            w = w / self.input_scale
        return w.astype(dtype, copy=False)

    @property
    def weight(self) -> Tensor:
        """The dequantized weight as a (non-trainable) Tensor; built on each access."""
        return Tensor(self.dequantized_weight())

    @property
    def nbytes(self) -> int:
        """Bytes stored: the quantized weight, the bias and the input scale."""
        total = self.qweight.nbytes
        if self.bias is not None:
            total += self.bias.data.nbytes
        if self.input_scale is not None:
            total += self.input_scale.nbytes
        return int(total)

    def extra_repr(self) -> str:
        meta = self.qweight.meta() if hasattr(self.qweight, "meta") else {"kind": "fp8"}
        extra = "".join(
            f", {k}={v}"
            for k, v in meta.items()
            if k in ("kind", "bits", "group_size", "blocksize")
        )
        sizes = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{sizes}, method={self.method}{extra}"
