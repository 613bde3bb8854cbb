# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 7. AdamW and learning-rate schedules, against closed forms
#
# AdamW at step $t$ with gradient $g$ (PyTorch's update, decay decoupled from the gradient):
#
# $$p \leftarrow p(1 - \eta\lambda), \quad m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,$$
# $$p \leftarrow p - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon} .$$
#
# Two cases have closed forms:
#
# * **Zero gradient**: only the decay acts, $p_t = p_0 (1 - \eta\lambda)^t$.
# * **Constant gradient $g$**: the bias corrections are exact, $\hat m_t = g$ and $\hat v_t = g^2$, so every
#   step moves by $s = \eta\, g / (|g| + \epsilon)$ and $p_t = c^t p_0 - s\,(1 - c^t)/(1 - c)$ with $c = 1 - \eta\lambda$.

# %%

import matplotlib.pyplot as plt
import numpy as np

import tinyllm
from tinyllm.optim import AdamW
from tinyllm.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, warmup_cosine

lr, wd, eps, steps = 0.05, 0.1, 1e-8, 60
g = np.array([0.3, -2.0, 1e-3, 5.0])
p0 = np.array([1.0, -0.5, 2.0, 0.1])

p = tinyllm.tensor(p0.copy(), requires_grad=True)
opt = AdamW([p], lr=lr, weight_decay=wd, eps=eps)
coef = tinyllm.tensor(g)
history = [p0.copy()]
for _ in range(steps):
    loss = (p * coef).sum()  # dloss/dp = g, constant
    opt.zero_grad()
    loss.backward()
    opt.step()
    history.append(p.detach().numpy().copy())
history = np.array(history)

c = 1 - lr * wd
s = lr * g / (np.abs(g) + eps)
t = np.arange(steps + 1)[:, None]
closed = c**t * p0 - s * (1 - c**t) / (1 - c)
print("constant gradient: max |AdamW - closed form| =", np.abs(history - closed).max())
assert np.allclose(history, closed, rtol=1e-10, atol=1e-12)

# zero gradient: pure decay
q = tinyllm.tensor(p0.copy(), requires_grad=True)
opt_q = AdamW([q], lr=lr, weight_decay=wd)
for _ in range(steps):
    q.grad = tinyllm.zeros(4, dtype="float64")
    opt_q.step()
print(
    "zero gradient: max |AdamW - p0 (1 - lr wd)^t| =",
    np.abs(q.detach().numpy() - p0 * c**steps).max(),
)
assert np.allclose(q.detach().numpy(), p0 * c**steps, rtol=1e-12)

# %% [markdown]
# The gradient the optimizer consumes is itself checked: here, Rosenbrock's function, whose
# gradient is known in closed form too, minimized by AdamW from $(-1.5, 2)$.


# %%
def rosenbrock(z):
    x, y = z[0], z[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


z = tinyllm.tensor([-1.5, 2.0], dtype="float64", requires_grad=True)
assert tinyllm.gradcheck(rosenbrock, [z])
rosenbrock(z).backward()
x0, y0 = -1.5, 2.0
closed_grad = [-2 * (1 - x0) - 400 * x0 * (y0 - x0**2), 200 * (y0 - x0**2)]
assert np.allclose(z.grad.numpy(), closed_grad)
print("gradcheck passed: Rosenbrock; gradient", z.grad.numpy(), "= closed form", closed_grad)

z = tinyllm.tensor([-1.5, 2.0], dtype="float64", requires_grad=True)
opt_z = AdamW([z], lr=0.02, weight_decay=0.0)
path = [z.detach().numpy().copy()]
for _ in range(2000):
    opt_z.zero_grad()
    rosenbrock(z).backward()
    opt_z.step()
    path.append(z.detach().numpy().copy())
path = np.array(path)
print("AdamW after 2000 steps:", path[-1], "(minimum at (1, 1))")

# %% [markdown]
# ## Schedules
#
# Linear warmup then cosine decay to a floor ratio $r$ (`warmup_cosine`), for warmup $W$ and total $S$:
#
# $$f(t) = \frac{t + 1}{W} \ (t < W), \qquad f(t) = r + (1 - r)\,\frac{1 + \cos(\pi\,\min(1, \tfrac{t - W}{S - W}))}{2} \ (t \ge W),$$
#
# and PyTorch's `CosineAnnealingLR`: $\eta_t = \eta_{\min} + (\eta_0 - \eta_{\min})(1 + \cos(\pi t / T_{\max}))/2$.
# Both are read back from an optimizer driven by the schedulers and compared with these formulas.

# %%
W, S, r, base = 10, 100, 0.1, 1e-3
w = tinyllm.zeros(1, requires_grad=True)
o1 = AdamW([w], lr=base)
sched = LambdaLR(o1, warmup_cosine(W, S, r))
o2 = AdamW([tinyllm.zeros(1, requires_grad=True)], lr=base)
cos_sched = CosineAnnealingLR(o2, T_max=S, eta_min=1e-5)
got, got_cos = [], []
for _ in range(S + 20):
    got.append(o1.param_groups[0]["lr"])
    got_cos.append(o2.param_groups[0]["lr"])
    sched.step()
    cos_sched.step()
steps_ = np.arange(S + 20)
formula = (
    np.where(
        steps_ < W,
        (steps_ + 1) / W,
        r + (1 - r) * (1 + np.cos(np.pi * np.clip((steps_ - W) / (S - W), 0, 1))) / 2,
    )
    * base
)
formula_cos = 1e-5 + (base - 1e-5) * (1 + np.cos(np.pi * steps_ / S)) / 2
assert np.allclose(got, formula, rtol=1e-12) and np.allclose(got_cos, formula_cos, rtol=1e-12)
print("schedules equal their closed forms at", len(steps_), "steps")

fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
axes[0].plot(history[:, :2], label=["p[0] AdamW", "p[1] AdamW"])
axes[0].plot(closed[:, :2], "k:", label="closed form")
axes[0].set_title("constant gradient + decoupled decay")
axes[0].set_xlabel("step")
axes[0].legend()
X, Y = np.meshgrid(np.linspace(-2, 2, 200), np.linspace(-1, 3, 200))
axes[1].contour(X, Y, np.log1p((1 - X) ** 2 + 100 * (Y - X**2) ** 2), levels=20)
axes[1].plot(path[:, 0], path[:, 1], "r-", lw=1)
axes[1].plot([1], [1], "k*")
axes[1].set_title("AdamW on Rosenbrock")
axes[2].plot(steps_, got, label="warmup_cosine")
axes[2].plot(steps_, got_cos, label="CosineAnnealingLR")
axes[2].set_xlabel("step")
axes[2].set_ylabel("learning rate")
axes[2].legend()
plt.tight_layout()
plt.show()
