# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 3. LayerNorm and RMSNorm
#
# Per row $x \in \mathbb{R}^D$, LayerNorm computes
#
# $$\mu = \tfrac1D \textstyle\sum_i x_i, \quad \sigma^2 = \tfrac1D \sum_i (x_i - \mu)^2, \quad
# r = (\sigma^2 + \epsilon)^{-1/2}, \quad \hat x = (x - \mu)\, r, \quad y = \hat x \odot w + b .$$
#
# Differentiating $\hat x_i$: $\partial \hat x_i / \partial x_k = r\,(\delta_{ik} - \tfrac1D - \tfrac1D \hat x_i \hat x_k)$.
# With $g = \bar y \odot w$ (the gradient arriving at $\hat x$) and $\langle\cdot\rangle$ the row mean,
#
# $$\bar x = r\,\big(g - \langle g \rangle - \hat x\,\langle g \odot \hat x \rangle\big), \qquad
# \bar w = \textstyle\sum_{\text{rows}} \bar y \odot \hat x, \qquad \bar b = \sum_{\text{rows}} \bar y .$$
#
# RMSNorm drops the centering ($\mu = 0$, no bias): $r = (\tfrac1D \sum_i x_i^2 + \epsilon)^{-1/2}$ and
# $\bar x = r\,(g - \hat x \langle g \odot \hat x\rangle)$.

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F

tinyllm.manual_seed(0)
N, D, eps = 6, 8, 1e-5
x = tinyllm.randn(N, D, dtype="float64", requires_grad=True)
w = tinyllm.randn(D, dtype="float64", requires_grad=True)
b = tinyllm.randn(D, dtype="float64", requires_grad=True)
dy = np.random.default_rng(1).standard_normal((N, D))

F.layer_norm(x, (D,), w, b, eps).backward(tinyllm.tensor(dy))

# the derivation above, in NumPy
xn, wn = x.detach().numpy(), w.detach().numpy()
mu = xn.mean(-1, keepdims=True)
r = 1 / np.sqrt(((xn - mu) ** 2).mean(-1, keepdims=True) + eps)
xhat = (xn - mu) * r
g = dy * wn
dx = r * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
for name, ours, theirs in (
    ("dx", dx, x.grad),
    ("dw", (dy * xhat).sum(0), w.grad),
    ("db", dy.sum(0), b.grad),
):
    print(name, "max |derivation - tinyllm| =", np.abs(ours - theirs.numpy()).max())
    assert np.allclose(ours, theirs.numpy(), atol=1e-12)

# RMSNorm, the same way
x.grad = w.grad = None
F.rms_norm(x, (D,), w, eps).backward(tinyllm.tensor(dy))
r = 1 / np.sqrt((xn**2).mean(-1, keepdims=True) + eps)
xhat = xn * r
dx = r * (g - xhat * (g * xhat).mean(-1, keepdims=True))
print("rms_norm dx max |derivation - tinyllm| =", np.abs(dx - x.grad.numpy()).max())
assert np.allclose(dx, x.grad.numpy(), atol=1e-12)

assert tinyllm.gradcheck(lambda x, w, b: F.layer_norm(x, (D,), w, b), [x, w, b])
assert tinyllm.gradcheck(lambda x, w: F.rms_norm(x, (D,), w, 1e-6), [x, w])
print("gradcheck passed: layer_norm, rms_norm")

# %% [markdown]
# ## Recompute or save? Measured in memory
#
# The backward needs $\hat x$. Three choices:
#
# 1. **tinyllm's fused op** saves $x$ and the two statistics $\mu, r$ (one number per row)
#    and recomputes $\hat x = (x - \mu) r$ in backward. $x$ costs nothing extra: the graph
#    holds the input anyway, as an edge.
# 2. **Save $\hat x$** (below, a `Function` written for this comparison, without the affine
#    map): one more $[N, D]$ array. (Here $\hat x$ is also the output; with the affine map
#    $y = \hat x w + b$ it is not, and the saved $\hat x$ is pure extra memory.)
# 3. **The composite** of primitive ops (mean, subtract, square, ...), each saving what its
#    own backward needs.
#
# We count the bytes of the distinct arrays a graph keeps alive (saved arrays and the input
# leaves), walking `grad_fn` nodes.


# %%
class LayerNormSaveXhat(tinyllm.Function):
    """LayerNorm without affine map that saves xhat instead of recomputing it."""

    @staticmethod
    def forward(ctx, x, eps):
        mu = x.mean(-1, keepdims=True)
        r = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
        xhat = (x - mu) * r
        ctx.save_for_backward(xhat, r)  # xhat: [N, D], r: [N, 1]
        return xhat

    @staticmethod
    def backward(ctx, dy):
        xhat, r = ctx.saved_tensors
        # xhat = (x - mu) r  =>  dx = r (g - <g> - xhat <g xhat>), g = dy
        dx = r * (dy - dy.mean(-1, keepdims=True) - xhat * (dy * xhat).mean(-1, keepdims=True))
        return dx, None


def composite_layer_norm(x, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdim=True)
    return xc * (var + eps) ** -0.5


def graph_bytes(y):
    """Bytes of the distinct arrays y's graph keeps alive: saved arrays and input leaves."""
    seen, stack, visited = {}, [y.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        for array in node.saved_tensors:
            if isinstance(array, np.ndarray):
                seen[id(array.base if array.base is not None else array)] = array.nbytes
        for t in node.inputs:
            if t is not None:
                if t.grad_fn is None:
                    seen[id(t.data)] = t.data.nbytes
                stack.append(t.grad_fn)
    return sum(seen.values())


xs = tinyllm.randn(4, 16, dtype="float64", requires_grad=True)
assert tinyllm.gradcheck(lambda z: LayerNormSaveXhat.apply(z, 1e-5), [xs])
assert np.allclose(
    composite_layer_norm(xs).detach().numpy(), F.layer_norm(xs, (16,)).detach().numpy()
)

widths = [64, 128, 256, 512, 1024]
rows = 256
measured = {"fused (saves x, mu, rstd)": [], "saves xhat": [], "composite": []}
for D_ in widths:
    xt = tinyllm.randn(rows, D_, requires_grad=True)  # float32, as in training
    measured["fused (saves x, mu, rstd)"].append(graph_bytes(F.layer_norm(xt, (D_,))))
    measured["saves xhat"].append(graph_bytes(LayerNormSaveXhat.apply(xt, 1e-5)))
    measured["composite"].append(graph_bytes(composite_layer_norm(xt)))
input_bytes = [rows * D_ * 4 for D_ in widths]
for k, v in measured.items():
    print(f"{k:28s}", [f"{b / i:.2f}x" for b, i in zip(v, input_bytes)], "of the input's bytes")
fused = measured["fused (saves x, mu, rstd)"]
# the fused graph holds x plus 2 numbers per row; nothing of size [N, D] beyond x
assert all(f == i + 2 * rows * 4 for f, i in zip(fused, input_bytes))

fig, ax = plt.subplots(figsize=(6, 3.5))
for k, v in measured.items():
    ax.plot(widths, np.array(v) / 2**20, "o-", label=k)
ax.set_xlabel(f"D (rows = {rows}, float32)")
ax.set_ylabel("MiB kept alive by the graph")
ax.legend()
plt.show()
