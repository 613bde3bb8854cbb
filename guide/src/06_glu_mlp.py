# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 6. SwiGLU, GeGLU and the MLP
#
# The transformer's feed-forward block. GPT-2's MLP is $y = \operatorname{gelu}(x W_1^\top) W_2^\top$; the
# gated variants (Shazeer 2020) multiply an activated *gate* by a linear *up* projection:
#
# $$h = \operatorname{act}(x W_g^\top) \odot (x W_u^\top), \qquad y = h W_d^\top ,$$
#
# with $\operatorname{act} = \operatorname{silu}$ (SwiGLU: Llama) or $\operatorname{gelu}$ (GeGLU: Gemma). tinyllm fuses
# $[W_g; W_u]$ into one matrix, so one GEMM gives $u = [\text{gate} \mid \text{up}]$, and one fused op
# computes $h$. Its backward, for $h = a(g) \odot p$:
#
# $$\bar g = \bar h \odot p \odot a'(g), \qquad \bar p = \bar h \odot a(g),$$
#
# with $\operatorname{silu}(x) = x\sigma(x)$, $\operatorname{silu}'(x) = \sigma(x)\,\big(1 + x(1 - \sigma(x))\big)$ and
# $\operatorname{gelu}(x) = x\Phi(x)$, $\operatorname{gelu}'(x) = \Phi(x) + x\varphi(x)$.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm import nn
from tinyllm.gradcheck import gradcheck_parameters

rng = np.random.default_rng(0)
N, Fh = 5, 6
u = tinyllm.tensor(rng.standard_normal((N, 2 * Fh)), requires_grad=True)
dh = rng.standard_normal((N, Fh))
F.swiglu(u).backward(tinyllm.tensor(dh))

gate, up = u.detach().numpy()[:, :Fh], u.detach().numpy()[:, Fh:]
sig = 1 / (1 + np.exp(-gate))
silu, dsilu = gate * sig, sig * (1 + gate * (1 - sig))
by_hand = np.concatenate([dh * up * dsilu, dh * silu], axis=1)
print("swiglu: max |by hand - tinyllm| =", np.abs(by_hand - u.grad.numpy()).max())
assert np.allclose(by_hand, u.grad.numpy(), atol=1e-12)

u.grad = None
F.geglu(u).backward(tinyllm.tensor(dh))
Phi = 0.5 * (1 + np.vectorize(math.erf)(gate / math.sqrt(2)))
phi = np.exp(-(gate**2) / 2) / math.sqrt(2 * math.pi)
by_hand = np.concatenate([dh * up * (Phi + gate * phi), dh * gate * Phi], axis=1)
print("geglu:  max |by hand - tinyllm| =", np.abs(by_hand - u.grad.numpy()).max())
assert np.allclose(by_hand, u.grad.numpy(), atol=1e-12)

for _name, fn in (("swiglu", F.swiglu), ("geglu", F.geglu), ("silu", F.silu), ("gelu", F.gelu)):
    assert tinyllm.gradcheck(fn, [u])
assert tinyllm.gradcheck(lambda z: F.geglu(z, approximate="tanh"), [u])
print("gradcheck passed: swiglu, geglu (exact and tanh), silu, gelu")

# %% [markdown]
# The whole block, gradchecked with respect to its weights (`nn.GatedMLP` in float64):

# %%
tinyllm.manual_seed(0)
mlp = nn.GatedMLP(d_model=8, hidden=12, variant="swiglu").double()
xb = tinyllm.tensor(rng.standard_normal((3, 4, 8)))
target = tinyllm.tensor(rng.standard_normal((3, 4, 8)))
for row in gradcheck_parameters(mlp, lambda: F.mse_loss(mlp(xb), target)):
    print(
        f"{row['parameter']:20s} {str(row['shape']):10s} max rel error {row['max_rel_error']:.1e}"
    )
    assert row["passed"]

# %% [markdown]
# The activations and their derivatives, the derivative from the backward checked against
# central differences at every plotted point.

# %%
xs = np.linspace(-4, 4, 161)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, fn in (
    ("silu", F.silu),
    ("gelu", F.gelu),
    ("gelu tanh", lambda t: F.gelu(t, approximate="tanh")),
    ("relu", F.relu),
):
    t = tinyllm.tensor(xs, requires_grad=True)
    out = fn(t)
    out.backward(tinyllm.ones_like(out))
    eps = 1e-6
    numeric = (fn(tinyllm.tensor(xs + eps)).numpy() - fn(tinyllm.tensor(xs - eps)).numpy()) / (
        2 * eps
    )
    if name != "relu":  # relu's kink at 0 has no derivative
        assert np.allclose(t.grad.numpy(), numeric, atol=1e-6)
    axes[0].plot(xs, out.detach().numpy(), label=name)
    axes[1].plot(xs, t.grad.numpy(), label=name)
axes[0].set_title("activation")
axes[1].set_title("derivative (from backward)")
for ax in axes:
    ax.legend()
    ax.grid(alpha=0.3)
plt.show()
