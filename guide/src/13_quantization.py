# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 13. Quantization: integer grids, packing, NF4, GPTQ and LoRA
#
# A weight $W \in \mathbb{R}^{N \times K}$ is stored as $b$-bit unsigned codes $q$ plus a scale $s$ and a zero
# point $z$ per group of $g$ input columns (per channel: $g = K$):
#
# $$q = \operatorname{clamp}\!\big(\operatorname{rint}(w / s) + z,\; 0,\; 2^b - 1\big), \qquad \hat w = s\,(q - z).$$
#
# **absmax** (symmetric): $s = \max|w| / (2^{b-1} - 1)$, $z = 2^{b-1}$. **zero-point** (asymmetric):
# the range $[\min, \max]$, widened to contain 0, is cut into $2^b - 1$ steps,
# $s = (\max - \min)/(2^b - 1)$, $z = \operatorname{rint}(-\min / s)$, so that $w = 0$ is exactly
# representable. Inside the range rounding moves a weight by at most half a step:
# $|w - \hat w| \le s/2$.

# %%
import statistics

import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm import nn
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.nn.lora import LoRALinear
from tinyllm.quant import (
    NF4_LEVELS,
    HessianAccumulator,
    gptq_quantize,
    nf4_levels,
    pack_codes,
    quantize_nf4,
    quantize_weight,
    unpack_codes,
)

rng = np.random.default_rng(0)
W = rng.standard_normal((4, 16))
for symmetric in (True, False):
    qw = quantize_weight(W, bits=4, granularity="group", group_size=8, symmetric=symmetric)
    s = np.repeat(qw.scales.astype(np.float64), 8, axis=1)  # [N, K]: each group's scale
    z = np.repeat(qw.zeros.astype(np.float64), 8, axis=1)
    groups = W.reshape(4, 2, 8)
    if symmetric:
        expect_s = np.abs(groups).max(2) / 7  # 2^(b-1) - 1 = 7
    else:
        lo, hi = np.minimum(groups.min(2), 0), np.maximum(groups.max(2), 0)
        expect_s = (hi - lo) / 15
    assert np.allclose(qw.scales, expect_s, rtol=1e-6)  # the scales are stored in float32
    by_hand = np.clip(np.rint(W / s) + z, 0, 15)
    assert (qw.codes == by_hand).all()
    err = np.abs(W - qw.dequantize(np.float64))
    print(
        "absmax" if symmetric else "zero-point",
        f"max |w - w_hat| / (s/2) = {(err / (s / 2)).max():.3f}",
    )
    assert (err <= s / 2 * (1 + 1e-5)).all()  # half a step (+ float32 rounding of s)

# %% [markdown]
# ## Packing: codes into bytes
#
# Codes of $b$ bits are written as one big-endian bit stream per row, so a row of $K$ codes
# takes $\lceil K b / 8 \rceil$ bytes. For 4 bits two codes share a byte, the first in the high
# nibble: $\text{byte} = 16\, q_0 + q_1$ (bitsandbytes' order). For 3 bits codes straddle bytes.

# %%
codes = rng.integers(0, 16, size=(3, 10))
packed = pack_codes(codes, 4)
assert packed.shape == (3, 5) and (packed == 16 * codes[:, 0::2] + codes[:, 1::2]).all()
for bits in (2, 3, 5, 8):
    c = rng.integers(0, 2**bits, size=(3, 11))
    p = pack_codes(c, bits)
    assert p.shape[1] == -(-11 * bits // 8) and (unpack_codes(p, bits, 11) == c).all()
# 3 bits by hand: the bit string of the codes, cut into bytes
c3 = np.array([[5, 1, 7]])  # 101 001 111 -> 10100111 1(0000000)
assert pack_codes(c3, 3).tolist() == [[0b10100111, 0b10000000]]
print("4-bit bytes = 16 q0 + q1; 2/3/5/8 bits round-trip; 3 bits by hand: 101 001 111 -> 0xA7 0x80")

# %% [markdown]
# ## NF4: levels at the quantiles of the normal
#
# Trained weights are roughly normal, so a uniform grid wastes levels on the tails. QLoRA's NF4
# puts its 16 levels at quantiles of $\mathcal{N}(0, 1)$, normalized to $[-1, 1]$, with an exact 0
# (8 positive levels, 7 negative). With $\delta = \tfrac12\big((1 - \tfrac{1}{30}) + (1 - \tfrac{1}{32})\big)$:
#
# $$\ell^+_i = \Phi^{-1}\!\Big(\delta + \tfrac{i}{8}(\tfrac12 - \delta)\Big)_{i=0..7}, \qquad
# \ell^-_i = -\Phi^{-1}\!\Big(\delta + \tfrac{i}{7}(\tfrac12 - \delta)\Big)_{i=0..6}, \qquad
# \text{levels} = \frac{\operatorname{sort}(\ell^+ \cup \ell^- \cup \{0\})}{\max} .$$
#
# Each block of 64 weights is scaled by its absmax $c$ and each $w/c$ takes the nearest level.
# Below, the levels from Python's own `statistics.NormalDist` (independent of tinyllm and
# scipy), against tinyllm's regenerated levels and bitsandbytes' published table; then NF4
# against 4-bit absmax on the same blocks of normal weights.

# %%
delta = ((1 - 1 / 30) + (1 - 1 / 32)) / 2
ppf = statistics.NormalDist().inv_cdf
pos = [ppf(p) for p in np.linspace(delta, 0.5, 9)[:-1]]
neg = [-ppf(p) for p in np.linspace(delta, 0.5, 8)[:-1]]
levels = np.sort(np.array(pos + neg + [0.0]))
levels /= levels.max()
print("max |levels - tinyllm's nf4_levels(delta)| =", np.abs(levels - nf4_levels(delta)).max())
assert np.allclose(levels, nf4_levels(delta), rtol=0, atol=1e-12)  # two quantile functions
# the published table: float32, from delta rounded to 0.9677083 (tinyllm's default offset)
assert np.allclose(levels, NF4_LEVELS, rtol=0, atol=1e-6)

w = rng.standard_normal(64 * 256)  # 256 blocks of 64 normal weights
nf4 = quantize_nf4(w, blocksize=64, double_quant=False).dequantize(np.float64)
blocks = w.reshape(-1, 64)
c = np.abs(blocks).max(1, keepdims=True)
nearest = levels[np.abs((blocks / c)[..., None] - levels).argmin(-1)] * c
assert np.allclose(nf4, nearest.ravel(), atol=1e-6)
int4 = quantize_weight(blocks, bits=4, granularity="channel").dequantize(np.float64).ravel()
mse_nf4, mse_int4 = np.mean((w - nf4) ** 2), np.mean((w - int4) ** 2)
print(f"mean squared error on N(0, 1) weights: NF4 {mse_nf4:.5f}   INT4 absmax {mse_int4:.5f}")
assert mse_nf4 < mse_int4

fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(blocks.ravel() / np.repeat(c, 64), bins=80, density=True, color="0.8", label="w / absmax")
ax.vlines(levels, 0, 0.4, color="C0", label="NF4 levels")
ax.vlines(np.arange(-7, 8) / 7, 0.45, 0.85, color="C1", label="INT4 absmax levels")
ax.set_xlabel("normalized weight")
ax.legend(loc="upper right", fontsize=8)
plt.show()

# %% [markdown]
# ## GPTQ: rounding one column at a time, compensating the rest
#
# What matters is the layer's output on real inputs, not $\|W - \hat W\|$. For calibration inputs
# $X \in \mathbb{R}^{n \times K}$ the output error of each row $w$ is a quadratic form in the weight error,
#
# $$\|X w^\top - X \hat w^\top\|^2 = \tfrac{n}{2}\,(w - \hat w)\, H\, (w - \hat w)^\top, \qquad H = \tfrac{2}{n} X^\top X ,$$
#
# and when the inputs are correlated, errors in one column can be cancelled by the others.
# GPTQ quantizes column $i$, then moves the not-yet-quantized columns $F$ by the optimal
# brain surgeon step for a quadratic, $\delta_F = -\frac{w_i - \hat w_i}{[H_F^{-1}]_{ii}}\,[H_F^{-1}]_{i,F}$.
# Round-to-nearest (RTN) ignores $H$. With $H \propto I$ nothing propagates and GPTQ *is* RTN.
# Below: a random layer, inputs with strongly correlated features, the same 4-bit grid.

# %%
N_out, K_in, n = 32, 64, 2048
mixing = rng.standard_normal((K_in, K_in)) * 0.3 + np.eye(K_in)
X = (
    rng.standard_normal((n, 8)) @ rng.standard_normal((8, K_in))
    + 0.3 * rng.standard_normal((n, K_in)) @ mixing
)
Wl = rng.standard_normal((N_out, K_in)) / 8
acc = HessianAccumulator(K_in)
acc.add_batch(X)
assert np.allclose(acc.H, 2 / n * X.T @ X)


def output_error(W_hat):
    return np.sum((X @ Wl.T - X @ W_hat.T) ** 2) / np.sum((X @ Wl.T) ** 2)


results = {}
for bits in (2, 3, 4, 5):
    rtn = quantize_weight(Wl, bits, "channel", symmetric=False).dequantize(np.float64)
    gptq, info = gptq_quantize(Wl, acc.H, bits, group_size=None, symmetric=False, percdamp=0.0)
    gq = gptq.dequantize(np.float64)
    # GPTQ's accumulated step losses are the quadratic form of its final error (exact, undamped)
    assert np.isclose(info["loss"], 0.5 * np.trace((Wl - gq) @ acc.H @ (Wl - gq).T), rtol=1e-6)
    results[bits] = (output_error(rtn), output_error(gq))
    print(
        f"{bits} bits: relative output error",
        f"RTN {results[bits][0]:.4f}   GPTQ {results[bits][1]:.4f}",
    )
    assert results[bits][1] < results[bits][0]

# with H = identity GPTQ has nothing to compensate with: it returns RTN's codes
same, _ = gptq_quantize(Wl, np.eye(K_in), 4, group_size=None, symmetric=False, percdamp=0.0)
assert (same.codes == quantize_weight(Wl, 4, "channel", symmetric=False).codes).all()

fig, ax = plt.subplots(figsize=(5, 3.2))
bits_axis = list(results)
ax.semilogy(bits_axis, [results[b][0] for b in bits_axis], "o-", label="round to nearest")
ax.semilogy(bits_axis, [results[b][1] for b in bits_axis], "s-", label="GPTQ")
ax.set_xticks(bits_axis)
ax.set_xlabel("bits per weight (per-channel grid)")
ax.set_ylabel("relative output error")
ax.legend()
plt.show()

# %% [markdown]
# ## LoRA: a low-rank update, merged or not
#
# LoRA freezes $W$ and learns $A \in \mathbb{R}^{r \times K}$, $B \in \mathbb{R}^{N \times r}$:
# $\;y = x W^\top + \tfrac{\alpha}{r}\, x A^\top B^\top$. For inference the update folds into the weight,
# $W' = W + \tfrac{\alpha}{r} B A$, and the merged layer must compute the same function. The
# adapters' gradients, with $h = x A^\top$:
#
# $$\bar B = \tfrac{\alpha}{r}\, \bar y^\top h, \qquad \bar A = \tfrac{\alpha}{r}\, (\bar y B)^\top x, \qquad
# \bar x = \bar y W + \tfrac{\alpha}{r}\, \bar y B A .$$
#
# (QLoRA is the same with $W$ replaced by its NF4 dequantization $\hat W$: the gradient flows
# through the frozen $\hat W$ to $x$ and into $A$, $B$.)

# %%
tinyllm.manual_seed(0)
lora = LoRALinear(nn.Linear(12, 6).double(), r=2, alpha=4.0)
with tinyllm.no_grad():
    lora.lora_B.copy_(tinyllm.tensor(rng.standard_normal((6, 2))))  # B starts at 0: make it count
xs_ = rng.standard_normal((5, 12))
x = tinyllm.tensor(xs_, requires_grad=True)
dy = rng.standard_normal((5, 6))
y = lora(x)
y.backward(tinyllm.tensor(dy))
A_, B_, W_ = (p.detach().numpy() for p in (lora.lora_A, lora.lora_B, lora.base.weight))
scale = 4.0 / 2
for name, ours, by_hand in (
    ("dB", lora.lora_B.grad, scale * dy.T @ (xs_ @ A_.T)),
    ("dA", lora.lora_A.grad, scale * (dy @ B_).T @ xs_),
    ("dx", x.grad, dy @ W_ + scale * dy @ B_ @ A_),
):
    assert np.allclose(ours.numpy(), by_hand, atol=1e-13), name
assert lora.base.weight.grad is None  # frozen
print("dA, dB, dx as derived; the base weight gets no gradient")

with tinyllm.no_grad():
    unmerged = lora(tinyllm.tensor(xs_)).numpy()
    lora.merge()
    merged = lora(tinyllm.tensor(xs_)).numpy()
    lora.unmerge()
    again = lora(tinyllm.tensor(xs_)).numpy()
print("max |merged - unmerged| =", np.abs(merged - unmerged).max())
assert np.allclose(merged, unmerged, atol=1e-13) and np.allclose(again, unmerged, atol=1e-13)

assert tinyllm.gradcheck(lora, [x])
adapters = nn.Module()  # a holder for the two trainable parameters (the same objects)
adapters.lora_A, adapters.lora_B = lora.lora_A, lora.lora_B
rows = gradcheck_parameters(adapters, lambda: F.mse_loss(lora(x), tinyllm.tensor(dy)))
assert all(r["passed"] for r in rows)
print("gradcheck passed: LoRA w.r.t. x, A and B; merge() and unmerge() keep the function")
