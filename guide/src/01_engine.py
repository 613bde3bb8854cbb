# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 1. The engine: a Tensor, a graph, reverse mode by hand
#
# A `tinyllm.Tensor` wraps an array (NumPy on the CPU). When an op runs on tensors that
# require a gradient, the engine records a node (a `Context`) holding the inputs and whatever
# the op saved; `loss.backward()` walks these nodes in reverse topological order and calls each
# op's hand-written `backward`.
#
# We differentiate a three-op graph by hand first:
#
# $$u = a\,b, \qquad v = u + c, \qquad y = \tanh v .$$
#
# Reverse mode starts from $\bar y = \partial y / \partial y = 1$ and applies the chain rule one
# node at a time, each node multiplying the incoming gradient by its local derivative:
#
# $$\bar v = \bar y\,(1 - \tanh^2 v), \qquad \bar u = \bar v, \quad \bar c = \bar v, \qquad
# \bar a = \bar u\, b, \quad \bar b = \bar u\, a .$$

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import tinyllm

a0, b0, c0 = 0.7, -1.3, 0.4
# by hand, forward then backward
u = a0 * b0
v = u + c0
y = math.tanh(v)
y_bar = 1.0
v_bar = y_bar * (1 - math.tanh(v) ** 2)
u_bar, c_bar = v_bar, v_bar
a_bar, b_bar = u_bar * b0, u_bar * a0

# the same graph in tinyllm
a, b, c = (tinyllm.tensor(x, dtype="float64", requires_grad=True) for x in (a0, b0, c0))
y_t = (a * b + c).tanh()
y_t.backward()
print("by hand :", a_bar, b_bar, c_bar)
print("tinyllm :", a.grad.item(), b.grad.item(), c.grad.item())
assert np.allclose([a.grad.item(), b.grad.item(), c.grad.item()], [a_bar, b_bar, c_bar])

# %% [markdown]
# The recorded graph is visible: each non-leaf tensor has a `grad_fn`, the node of the op
# that made it, whose `inputs` are the graph's edges.

# %%
y_t = (a * b + c).tanh()
node = y_t.grad_fn
while node is not None:
    print(
        node,
        "<- inputs:",
        [repr(t.grad_fn) if t is not None and t.grad_fn else "leaf" for t in node.inputs],
    )
    parents = [t.grad_fn for t in node.inputs if t is not None and t.grad_fn is not None]
    node = parents[0] if parents else None

# %% [markdown]
# ## Writing an op: `tinyllm.Function`
#
# An op is a `Function` with a static `forward(ctx, *arrays)` and `backward(ctx, *grads)`.
# For $y = x^3$ elementwise, with an upstream gradient $\bar y$ (the *cotangent*),
#
# $$\bar x = \bar y \odot 3x^2 .$$
#
# `tinyllm.gradcheck` checks a backward against float64 central differences under a
# **random** cotangent $v$: for $L(x) = \langle v, f(x) \rangle$ it compares the analytic
# $\nabla L = \text{backward}(v)$ with $\big(L(x + \epsilon e_k) - L(x - \epsilon e_k)\big)/2\epsilon$
# for every element $k$.


# %%
class Cube(tinyllm.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)  # x: same shape as the input
        return x**3

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        # y = x^3  =>  dx = dy * 3 x^2
        return dy * 3 * x**2


tinyllm.manual_seed(0)
x = tinyllm.randn(4, 5, dtype="float64", requires_grad=True)
assert tinyllm.gradcheck(Cube.apply, [x])
print("Cube: gradcheck passed")

# %% [markdown]
# ## A deliberately wrong backward, and why the cotangent must be random
#
# A classic mistake is to return the local derivative $3x^2$ and forget to multiply by the
# incoming gradient $\bar y$. Under `y.sum().backward()` the cotangent is all ones, so the
# mistake is invisible: the gradient comes out right. gradcheck's random cotangent exposes it.


# %%
class WrongCube(tinyllm.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 3 * x**2  # BUG: forgot "dy *"


x.grad = None
WrongCube.apply(x).sum().backward()
print(
    "under .sum() the wrong backward matches 3x^2:",
    np.allclose(x.grad.numpy(), 3 * x.detach().numpy() ** 2),
)

try:
    tinyllm.gradcheck(WrongCube.apply, [x])
    caught = False
except tinyllm.GradcheckError as error:
    caught = True
    print("gradcheck caught it:\n ", error)
assert caught, "gradcheck must reject the wrong backward"

# %% [markdown]
# The picture: the derivative of $L(x) = v\,x^3$ for one cotangent value $v = -0.8$, as the
# correct backward, the wrong one and central differences compute it.

# %%
xs = np.linspace(-2, 2, 41)
v = -0.8
eps = 1e-6
numeric = v * ((xs + eps) ** 3 - (xs - eps) ** 3) / (2 * eps)
grads = {}
for fn in (Cube, WrongCube):
    t = tinyllm.tensor(xs, dtype="float64", requires_grad=True)
    fn.apply(t).backward(tinyllm.full((len(xs),), v, dtype="float64"))
    grads[fn.__name__] = t.grad.numpy()
assert np.allclose(grads["Cube"], numeric, atol=1e-6)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(xs, numeric, "k.", label="central differences")
ax.plot(xs, grads["Cube"], label="Cube.backward (correct)")
ax.plot(xs, grads["WrongCube"], "--", label="WrongCube.backward (ignores dy)")
ax.set_xlabel("x")
ax.set_ylabel(r"$\partial L / \partial x$")
ax.set_title(r"$L = v\,x^3$, cotangent $v = -0.8$")
ax.legend()
plt.show()
