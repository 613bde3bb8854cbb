"""Normalization layers: ``LayerNorm``, ``RMSNorm``, ``GroupNorm`` (PyTorch's names and layouts).

Each is a thin module around one fused op of ``tinyllm.functional.norms``; the math and the
hand-written backward live there. Per row x of D numbers (the trailing ``normalized_shape``):

    LayerNorm:  y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias       (biased var)
    RMSNorm:    y = x / sqrt(mean(x^2) + eps) * weight
    GroupNorm:  x [N, C, *] split into G groups of C/G channels; each (n, g) group is
                normalized like LayerNorm, then y[:, c] = xhat[:, c] * weight[c] + bias[c]

Parameters are named ``weight`` and ``bias`` and initialized to ones and zeros, as in
PyTorch, so ``torch.nn.LayerNorm`` / ``RMSNorm`` / ``GroupNorm`` state dicts load key for key.
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.nn.module import Module
from tinyllm.nn.parameter import Parameter

__all__ = ["GroupNorm", "LayerNorm", "RMSNorm"]


def _shape_tuple(normalized_shape, name: str) -> tuple[int, ...]:
    shape = (
        (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
    )
    shape = tuple(int(n) for n in shape)
    if not shape or any(n <= 0 for n in shape):
        raise ValueError(
            f"{name}: normalized_shape must be positive sizes, got {normalized_shape!r}"
        )
    return shape


def _filled(shape: tuple[int, ...], value: float, dtype, device) -> Parameter:
    xp = backend.xp_for(backend.normalize_device(device))
    return Parameter(xp.full(shape, value, dtype=backend.as_dtype(dtype)))


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape``.

    x: [..., *normalized_shape] -> y: same shape. ``weight`` and ``bias``: normalized_shape
    (absent when ``elementwise_affine=False``; ``bias=False`` drops only the bias).
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape, "LayerNorm")
        self.eps = float(eps)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = _filled(self.normalized_shape, 1.0, dtype, device)
            self.bias = _filled(self.normalized_shape, 0.0, dtype, device) if bias else None
        else:
            self.weight = None
            self.bias = None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the trailing ``normalized_shape``.

    ``eps=None`` uses the machine epsilon of the input's dtype, as ``torch.nn.RMSNorm``
    (Llama checkpoints set eps explicitly, typically 1e-5 or 1e-6). x: [..., *S] -> same shape.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float | None = None,
        elementwise_affine: bool = True,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape, "RMSNorm")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = elementwise_affine
        self.weight = (
            _filled(self.normalized_shape, 1.0, dtype, device) if elementwise_affine else None
        )

    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class GroupNorm(Module):
    """Normalize each of ``num_groups`` channel groups of x [N, C, *], then a per-channel affine.

    ``weight`` and ``bias``: [num_channels]. ``num_channels`` must be divisible by
    ``num_groups``.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        if num_groups <= 0 or num_channels <= 0 or num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_channels={num_channels} must be divisible by "
                f"num_groups={num_groups} (both positive)"
            )
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps = float(eps)
        self.affine = affine
        if affine:
            self.weight = _filled((num_channels,), 1.0, dtype, device)
            self.bias = _filled((num_channels,), 0.0, dtype, device)
        else:
            self.weight = None
            self.bias = None

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm: expected an input [N, {self.num_channels}, *], got shape "
                f"{tuple(x.shape)}"
            )
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
