"""Convolution and pooling modules (PyTorch's ``nn.Conv2d``, ``nn.MaxPool2d``,
``nn.AvgPool2d``) and ``PatchEmbed``, the image-to-tokens layer of ViT (timm's name).

Conv2d's init is PyTorch's: weight ~ kaiming_uniform(a = sqrt(5)), i.e.
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = Cin/groups kh kw, and bias ~ the same U.

PatchEmbed cuts x [N, C, H, W] into non-overlapping p x p patches and maps each to
``embed_dim``. Two equal ways (``tests/vision/test_conv_modules.py`` checks they agree):

    conv:     Conv2d(C, D, kernel_size=p, stride=p)(x) -> [N, D, H/p, W/p] -> [N, L, D]
    unfold:   patches [N, L, C p p] (reshape/permute, row-major over the grid) @ W^T + b,
              W = conv weight viewed as [D, C p p]
"""

from __future__ import annotations

import math

import tinyllm.functional as F
from tinyllm.nn import init
from tinyllm.nn.layers import _empty
from tinyllm.nn.module import Module

__all__ = ["AvgPool2d", "Conv2d", "MaxPool2d", "PatchEmbed", "patchify"]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Conv2d(Module):
    """``torch.nn.Conv2d`` (zeros padding only): weight [Cout, Cin/groups, kh, kw], bias
    [Cout]; forward = ``F.conv2d``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
        dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
        dtype=None, device=None,
    ) -> None:  # fmt: skip
        super().__init__()
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d: padding_mode={padding_mode!r}; only 'zeros'")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.groups = groups
        kh, kw = self.kernel_size
        kw_ = {"dtype": dtype, "device": device}
        self.weight = _empty(out_channels, in_channels // groups, kh, kw, **kw_)
        self.bias = _empty(out_channels, **kw_) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)  # fmt: skip

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")  # fmt: skip
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class MaxPool2d(Module):
    """``torch.nn.MaxPool2d`` (ceil_mode=False): forward = ``F.max_pool2d``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)  # fmt: skip

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """``torch.nn.AvgPool2d`` (ceil_mode=False): forward = ``F.avg_pool2d``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None) -> None:  # fmt: skip
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)  # fmt: skip

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def patchify(x, patch_size):
    """x [N, C, H, W] -> [N, (H/ph)(W/pw), C ph pw]: the patches, row-major over the grid,
    each flattened in (c, i, j) order (the order of a conv weight [D, C, ph, pw])."""
    ph, pw = _pair(patch_size)
    N, C, H, W = x.shape
    if H % ph or W % pw:
        raise ValueError(f"patchify: image {H} x {W} is not divisible by patch {(ph, pw)}")
    gh, gw = H // ph, W // pw
    x = x.reshape(N, C, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(N, gh * gw, C * ph * pw)


class PatchEmbed(Module):
    """timm's ``PatchEmbed``: x [N, C, H, W] -> tokens [N, L, embed_dim], L = (H/p)(W/p).

    ``proj`` is ``Conv2d(in_chans, embed_dim, p, stride=p)``; ``mode="conv"`` runs it,
    ``mode="unfold"`` runs ``patchify`` + a GEMM with the same weight (equal results).
    """

    def __init__(self, img_size=8, patch_size=2, in_chans: int = 1, embed_dim: int = 32,
                 mode: str = "conv", dtype=None, device=None) -> None:  # fmt: skip
        super().__init__()
        if mode not in ("conv", "unfold"):
            raise ValueError(f"PatchEmbed: mode must be 'conv' or 'unfold', got {mode!r}")
        self.img_size, self.patch_size = _pair(img_size), _pair(patch_size)
        if self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]:
            raise ValueError(
                f"PatchEmbed: img_size {self.img_size} not divisible by patch {self.patch_size}"
            )
        self.grid_size = (self.img_size[0] // self.patch_size[0],
                          self.img_size[1] // self.patch_size[1])  # fmt: skip
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.mode = mode
        self.proj = Conv2d(in_chans, embed_dim, self.patch_size, stride=self.patch_size,
                           dtype=dtype, device=device)  # fmt: skip

    def forward(self, x):
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"PatchEmbed: expected images {self.img_size}, got {tuple(x.shape)}")
        if self.mode == "conv":
            y = self.proj(x)  # [N, D, gh, gw]
            return y.reshape(y.shape[0], y.shape[1], -1).transpose(1, 2)
        W = self.proj.weight
        return F.linear(patchify(x, self.patch_size), W.reshape(W.shape[0], -1), self.proj.bias)
