# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 2. Softmax and cross-entropy
#
# **Softmax** maps logits $x \in \mathbb{R}^C$ to probabilities $p_i = e^{x_i} / \sum_j e^{x_j}$.
# Its Jacobian is
#
# $$\frac{\partial p_i}{\partial x_k} = p_i(\delta_{ik} - p_k), \qquad
# J = \operatorname{diag}(p) - p\,p^\top ,$$
#
# so a backward never needs to form $J$: for a cotangent $\bar p$,
#
# $$\bar x = J^\top \bar p = p \odot \big(\bar p - \langle \bar p, p \rangle\big).$$
#
# **Cross-entropy** of logits against class $t$ is $\ell = -\log p_t = \operatorname{lse}(x) - x_t$
# with $\operatorname{lse}(x) = \log \sum_j e^{x_j}$. Since $\partial\,\operatorname{lse}/\partial x_k = p_k$,
#
# $$\frac{\partial \ell}{\partial x} = p - \operatorname{onehot}(t),$$
#
# which is why the fused op saves only one number per row (the log-sum-exp) and never the
# $[N, C]$ probabilities.

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F

tinyllm.manual_seed(0)
x = tinyllm.randn(5, dtype="float64", requires_grad=True)
p = F.softmax(x, dim=-1)
# the Jacobian, one row per basis cotangent e_i (reverse mode gives rows of J^T = J)
rows = []
for i in range(5):
    x.grad = None
    e = np.zeros(5)
    e[i] = 1.0
    F.softmax(x, dim=-1).backward(tinyllm.tensor(e))
    rows.append(x.grad.numpy().copy())
J_engine = np.stack(rows)
pn = p.detach().numpy()
J_closed = np.diag(pn) - np.outer(pn, pn)
print("max |J_engine - (diag(p) - p p^T)| =", np.abs(J_engine - J_closed).max())
assert np.allclose(J_engine, J_closed, atol=1e-12)

# %% [markdown]
# The fused cross-entropy gradient is $p - \text{onehot}$ (divided by $N$ for the mean):

# %%
logits = tinyllm.randn(4, 6, dtype="float64", requires_grad=True)
target = tinyllm.tensor([0, 3, 5, 1])
F.cross_entropy(logits, target, reduction="sum").backward()
probs = F.softmax(logits.detach(), dim=-1).numpy()
onehot = np.eye(6)[target.numpy()]
print("max |grad - (p - onehot)| =", np.abs(logits.grad.numpy() - (probs - onehot)).max())
assert np.allclose(logits.grad.numpy(), probs - onehot, atol=1e-12)

assert tinyllm.gradcheck(lambda z: F.softmax(z, dim=-1), [logits])
assert tinyllm.gradcheck(lambda z: F.cross_entropy(z, target), [logits])
assert tinyllm.gradcheck(lambda z: F.log_softmax(z, dim=0), [logits])
print("gradcheck passed: softmax, log_softmax, cross_entropy")

# %% [markdown]
# ## The log-sum-exp trick
#
# $e^{x}$ overflows float32 for $x > 88.7$. Subtracting $m = \max_j x_j$ changes nothing
# mathematically, $\operatorname{lse}(x) = m + \log \sum_j e^{x_j - m}$, and every exponent is then $\le 0$.

# %%
big = np.array([1000.0, 999.0, 990.0], dtype=np.float32)
with np.errstate(over="ignore"):
    naive = np.log(np.exp(big).sum())
m = big.max()
stable = m + np.log(np.exp(big - m).sum())
print(
    "naive:",
    naive,
    " shifted:",
    stable,
    " tinyllm:",
    F.logsumexp(tinyllm.tensor(big), dim=0).item(),
)
assert np.isinf(naive) and np.isclose(stable, F.logsumexp(tinyllm.tensor(big), dim=0).item())

# %% [markdown]
# ## float32 against float64, measured
#
# The float32 loss of tinyllm's fused op and of the textbook composite
# $-\log(\operatorname{softmax}(x)_t)$, against a float64 reference, as the logits grow. The
# composite fails once the target's probability underflows to 0 (its log is $-\infty$); the
# fused form $\operatorname{lse}(x) - x_t$ never takes the log of a probability.
#
# The loss is a difference of numbers of the size of the logits, so float32's error grows with
# them: the right yardstick is the absolute error divided by the logit scale $s$, which should
# stay a small multiple of float32's unit roundoff $2^{-24} \approx 6 \times 10^{-8}$.
# Read the table honestly: where the composite is finite it is as accurate as the fused op
# (slightly better at small scales here); the fused op's advantage is that it never becomes
# infinite, and that it saves one number per row instead of the $[N, C]$ probabilities.

# %%
rng = np.random.default_rng(0)
base = rng.standard_normal((256, 32))
t = rng.integers(0, 32, size=256)
scales = np.logspace(0, 3, 13)
err_fused, err_composite = [], []
for s in scales:
    z64 = base * s
    ref = (
        np.log(np.exp(z64 - z64.max(1, keepdims=True)).sum(1)) + z64.max(1) - z64[np.arange(256), t]
    )
    z32 = tinyllm.tensor(z64.astype(np.float32))
    fused = F.cross_entropy(z32, tinyllm.tensor(t), reduction="none").numpy().astype(np.float64)
    with np.errstate(divide="ignore"):
        composite = -np.log(F.softmax(z32, dim=-1).numpy()[np.arange(256), t].astype(np.float64))
    err_fused.append(np.max(np.abs(fused - ref)) / s)
    err_composite.append(np.max(np.abs(composite - ref)) / s)
for s, a, b in zip(scales, err_fused, err_composite):
    print(f"scale {s:8.1f}: fused |error|/s {a:.2e}   composite {b:.2e}")
assert max(err_fused) < 1e-6  # ~16 roundoffs of 6e-8: a max, a sum of 32 exps, a log, a subtraction

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(scales, err_fused, "o-", label="F.cross_entropy (lse - x_t), float32")
ax.loglog(
    scales, np.minimum(err_composite, 1e3), "s--", label="-log softmax, float32 (inf clipped)"
)
ax.set_xlabel("logit scale")
ax.set_ylabel("max |error| / logit scale, vs float64")
ax.legend()
plt.show()
