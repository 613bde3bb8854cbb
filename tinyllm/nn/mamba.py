"""The Mamba block (Gu & Dao 2023; mamba_ssm/modules/mamba_simple.py::Mamba), in full and
one token at a time.

For x [batch, L, d_model], with d_inner = expand d_model, N = d_state, R = dt_rank:

    x, z     = split(in_proj(x))                         [batch, L, d_inner] each
    x        = silu(causal_conv1d(x, conv1d.weight, conv1d.bias))       depthwise, width d_conv
    dt, B, C = split(x_proj(x))                          [batch, L, R], [.., N], [.., N]
    dt       = dt @ dt_proj.weight^T                     [batch, L, d_inner] (bias: below)
    A        = -exp(A_log)                               [d_inner, N]
    y        = selective_scan(x, dt, A, B, C, D, z, delta_bias=dt_proj.bias, delta_softplus)
    out      = out_proj(y)                               [batch, L, d_model]

Initialization as mamba_ssm: A_log = log(1..N) in every channel (S4D-real), D = 1,
dt_proj.weight ~ U(+-R^-1/2), dt_proj.bias = softplus^-1(dt) with dt log-uniform in
[dt_min, dt_max] floored at dt_init_floor (so that softplus(bias) = dt at init). A_log and
D are not weight-decayed (``Mamba.no_weight_decay``). Parameter names are mamba_ssm's
(``conv1d.weight`` is [d_inner, 1, d_conv] as torch's Conv1d), so its state dicts map key
for key.

Step mode (``step``: array code, no graph): the conv state holds the last d_conv inputs
of the convolution, the SSM state h [batch, d_inner, N]; each token shifts the conv state
left, appends x_t, and runs one step of the same recurrence (bias and softplus applied
exactly as in the full forward), so its outputs equal the full forward's.
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.functional.ssm import causal_conv1d, selective_scan
from tinyllm.nn import init
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module
from tinyllm.nn.parameter import Parameter

__all__ = ["DepthwiseConv1d", "Mamba", "MambaState"]


class DepthwiseConv1d(Module):
    """torch's ``Conv1d(d, d, W, groups=d, padding=W-1)`` keeping the first L outputs: a
    causal depthwise convolution. weight [d, 1, W] (torch's layout), bias [d].
    x [batch, d, L] -> [batch, d, L]; ``activation="silu"`` is fused."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        bound = 1 / math.sqrt(kernel_size)  # torch's default: U(+-1/sqrt(fan_in))
        self.weight = init.uniform_(Parameter(np.zeros((channels, 1, kernel_size), np.float32)),
                                    -bound, bound)  # fmt: skip
        self.bias = None
        if bias:
            self.bias = init.uniform_(Parameter(np.zeros(channels, np.float32)), -bound, bound)

    def forward(self, x, activation: str | None = None):
        weight = self.weight.reshape(self.channels, self.kernel_size)
        return causal_conv1d(x, weight, self.bias, activation)


class MambaState:
    """The decoding state of one Mamba block: conv [batch, d_inner, d_conv] (the last
    d_conv inputs of the convolution, oldest first) and ssm [batch, d_inner, N] (h)."""

    def __init__(self, conv, ssm) -> None:
        self.conv, self.ssm = conv, ssm


class Mamba(Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = di = expand * d_model
        self.dt_rank = R = dt_rank if dt_rank is not None else math.ceil(d_model / 16)
        self.in_proj = Linear(d_model, 2 * di, bias=bias)
        self.conv1d = DepthwiseConv1d(di, d_conv, bias=conv_bias)
        self.x_proj = Linear(di, R + 2 * d_state, bias=False)
        self.dt_proj = Linear(R, di, bias=True)
        self.out_proj = Linear(di, d_model, bias=bias)
        # dt_proj: weight U(+-dt_scale R^-1/2); bias = softplus^-1(dt), dt log-uniform
        init.uniform_(self.dt_proj.weight, -dt_scale * R**-0.5, dt_scale * R**-0.5)
        u = tinyllm.rand(di, dtype="float64").numpy()  # tinyllm's generator: manual_seed
        dt = np.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = np.maximum(dt, dt_init_floor)
        inv_softplus = dt + np.log(-np.expm1(-dt))  # softplus(inv_softplus) = dt
        self.dt_proj.bias = Parameter(inv_softplus.astype(np.float32))
        # S4D-real: A = -(1, 2, ..., N) in every channel, stored as A_log; D = 1
        A = np.tile(np.arange(1, d_state + 1, dtype=np.float64), (di, 1))
        self.A_log = Parameter(np.log(A).astype(np.float32))
        self.D = Parameter(np.ones(di, np.float32))

    @staticmethod
    def no_weight_decay() -> set[str]:
        """Parameter names (relative to the block) that AdamW must not decay."""
        return {"A_log", "D"}

    def forward(self, hidden, return_state: bool = False):
        """hidden [batch, L, d_model] -> [batch, L, d_model] (and the final MambaState)."""
        batch, L, _ = hidden.shape
        di, N, R = self.d_inner, self.d_state, self.dt_rank
        xz = self.in_proj(hidden).transpose(1, 2)  # [batch, 2 di, L]
        x, z = xz[:, :di], xz[:, di:]
        x = self.conv1d(x, activation="silu")  # [batch, di, L]
        x_dbl = self.x_proj(x.transpose(1, 2))  # [batch, L, R + 2N]
        dt = x_dbl[:, :, :R].matmul(self.dt_proj.weight.transpose(0, 1))  # [batch, L, di]
        B = x_dbl[:, :, R : R + N].transpose(1, 2)  # [batch, N, L]
        C = x_dbl[:, :, R + N :].transpose(1, 2)
        A = -self.A_log.exp()  # [di, N]
        y = selective_scan(
            x, dt.transpose(1, 2), A, B, C, self.D, z, delta_bias=self.dt_proj.bias,
            delta_softplus=True, return_last_state=return_state,
        )  # fmt: skip
        if not return_state:
            return self.out_proj(y.transpose(1, 2))
        y, last = y
        xin = xz.data[:, :di]  # the conv's inputs: its state is the last d_conv of them
        conv = backend.get_array_module(xin).zeros((batch, di, self.d_conv), xin.dtype)
        keep = min(L, self.d_conv)
        conv[:, :, self.d_conv - keep :] = xin[:, :, L - keep :]
        return self.out_proj(y.transpose(1, 2)), MambaState(conv, last.data.copy())

    # ---------------------------------------------------------------- step mode
    def new_state(self, batch: int, dtype=np.float32, xp=np) -> MambaState:
        di = self.d_inner
        return MambaState(xp.zeros((batch, di, self.d_conv), dtype),
                          xp.zeros((batch, di, self.d_state), dtype))  # fmt: skip

    def step(self, hidden, state: MambaState):
        """One token: hidden [batch, d_model] (an array) -> [batch, d_model]; ``state`` is
        updated in place. Array code on the parameters' data (no graph)."""
        xp = backend.get_array_module(hidden)
        di, N, R = self.d_inner, self.d_state, self.dt_rank
        xz = hidden @ self.in_proj.weight.data.T
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.data
        x, z = xz[:, :di], xz[:, di:]  # [batch, di]
        # conv: shift the window left, append x_t, then one output of the convolution
        state.conv[:, :, :-1] = state.conv[:, :, 1:]
        state.conv[:, :, -1] = x
        x = (state.conv * self.conv1d.weight.data[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias.data
        x = x / (1 + xp.exp(-x))  # silu
        x_dbl = x @ self.x_proj.weight.data.T  # [batch, R + 2N]
        dt, B, C = x_dbl[:, :R], x_dbl[:, R : R + N], x_dbl[:, R + N :]
        dt = dt @ self.dt_proj.weight.data.T + self.dt_proj.bias.data  # [batch, di]
        dt = xp.where(dt > 20, dt, xp.log1p(xp.exp(xp.minimum(dt, 20))))  # softplus
        A = -xp.exp(self.A_log.data)  # [di, N]
        # h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t x_t;  y_t = <C_t, h_t> + D x_t
        state.ssm[...] = xp.exp(dt[:, :, None] * A) * state.ssm + (dt * x)[:, :, None] * B[:, None]
        y = (state.ssm * C[:, None, :]).sum(-1) + self.D.data * x
        y = y * (z / (1 + xp.exp(-z)))  # * silu(z)
        out = y @ self.out_proj.weight.data.T
        if self.out_proj.bias is not None:
            out = out + self.out_proj.bias.data
        return out
