# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 10. Retrieval: HNSW's graph, drawn on 2-D points
#
# Dense retrieval embeds queries and passages as vectors and returns the nearest passages.
# Exact search compares a query with all $N$ vectors. **HNSW** (Malkov & Yashunin 2018) builds a
# multi-layer proximity graph instead. Every point gets a random top layer
#
# $$\ell = \lfloor -\ln U \cdot m_L \rfloor, \quad U \sim \mathcal{U}(0, 1], \quad m_L = 1/\ln M
# \qquad\Rightarrow\qquad P(\ell \ge l) = M^{-l},$$
#
# so each layer holds about $1/M$ of the one below: sparse "express lanes" on top, everything on
# layer 0. A search descends greedily through the upper layers, then runs a beam search of width
# `ef` on layer 0. Each point links to at most $M$ neighbours per upper layer ($2M$ on layer 0).
#
# Where the gradient comes in: the embedder is trained so that a query scores its own passage
# above the others, with the contrastive (InfoNCE) loss over a batch of $n$ pairs, cosine similarity
# and temperature $\tau$:
#
# $$\mathcal{L} = \frac1n \sum_i -\log \frac{\exp(\cos(q_i, d_i)/\tau)}{\sum_j \exp(\cos(q_i, d_j)/\tau)} ,$$
#
# a cross-entropy (notebook 2) whose logits are similarities. Its gradient is gradchecked below.

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.rag.hnsw import HNSWIndex

rng = np.random.default_rng(0)
points = rng.uniform(0, 1, size=(300, 2))
M = 4
index = HNSWIndex(dim=2, M=M, ef_construction=64, ef=16, seed=0)
index.add(points)
levels = index.levels
print(
    "points per top layer:",
    np.bincount(levels),
    " entry point:",
    index.entry_point,
    "on layer",
    index.max_level,
)
for layer in range(index.max_level + 1):
    assert index.degrees(layer).max() <= (2 * M if layer == 0 else M)

# the level distribution against P(level >= l) = M^-l, on many samples
sample = index.sample_levels(200_000)
for l in range(4):
    print(f"P(level >= {l}): sampled {np.mean(sample >= l):.4f}   M^-l = {M**-l:.4f}")
    assert abs(np.mean(sample >= l) - M**-l) < 0.01  # binomial std at most 0.0011 for 200k draws

# %% [markdown]
# Recall against exact search: the fraction of the true 5 nearest neighbours HNSW returns.

# %%
queries = rng.uniform(0, 1, size=(200, 2))
_, found = index.search(queries, k=5)
d2 = ((queries[:, None, :] - points[None, :, :]) ** 2).sum(-1)
truth = np.argsort(d2, axis=1)[:, :5]
recall = np.mean([len(set(f) & set(t)) / 5 for f, t in zip(found, truth)])
print(f"recall@5 = {recall:.3f} (ef = 16, M = {M})")
assert recall > 0.9

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
for layer, ax in zip(range(3), axes):
    members = np.nonzero(levels >= layer)[0]
    for node in members:
        for nb in index.neighbours(int(node), layer):
            ax.plot(*points[[node, nb]].T, color="C0", lw=0.5, alpha=0.6)
    ax.scatter(*points.T, s=4, color="lightgray")
    ax.scatter(*points[members].T, s=10, color="C0")
    ax.scatter(*points[index.entry_point], s=80, marker="*", color="C3", label="entry point")
    ax.set_title(f"layer {layer}: {len(members)} points")
    ax.set_aspect("equal")
q0 = queries[0]
axes[0].scatter(*q0, marker="x", s=60, color="k", label="query")
axes[0].scatter(
    *points[found[0]].T, s=30, facecolors="none", edgecolors="C1", label="its 5 neighbours"
)
axes[0].legend(loc="lower left", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The contrastive gradient
#
# With $\hat q = q / \|q\|$, $\hat d = d / \|d\|$, logits $Z = \hat Q \hat D^\top / \tau$ and targets the diagonal,
# $\bar Z = (\operatorname{softmax}(Z) - I)/n$ (notebook 2), $\bar{\hat Q} = \bar Z \hat D / \tau$, and the
# normalization's backward $\bar q = (\bar{\hat q} - \hat q\,\langle \hat q, \bar{\hat q}\rangle)/\|q\|$.

# %%
n, dim, tau = 6, 5, 0.1
Q = tinyllm.tensor(rng.standard_normal((n, dim)), requires_grad=True)
Dm = tinyllm.tensor(rng.standard_normal((n, dim)), requires_grad=True)
labels = tinyllm.arange(n)


def info_nce(q, d):
    qh = q / (q * q).sum(-1, keepdim=True).sqrt()
    dh = d / (d * d).sum(-1, keepdim=True).sqrt()
    return F.cross_entropy(qh @ dh.T / tau, labels)


assert tinyllm.gradcheck(info_nce, [Q, Dm])
info_nce(Q, Dm).backward()

# the derivation above, in NumPy
q_, d_ = Q.detach().numpy(), Dm.detach().numpy()
qn, dn = np.linalg.norm(q_, axis=1, keepdims=True), np.linalg.norm(d_, axis=1, keepdims=True)
qh, dh = q_ / qn, d_ / dn
Z = qh @ dh.T / tau
P = np.exp(Z - Z.max(1, keepdims=True))
P /= P.sum(1, keepdims=True)
dZ = (P - np.eye(n)) / n
dqh = dZ @ dh / tau
dq = (dqh - qh * (qh * dqh).sum(1, keepdims=True)) / qn
print("max |derivation - tinyllm| for dq:", np.abs(dq - Q.grad.numpy()).max())
assert np.allclose(dq, Q.grad.numpy(), atol=1e-12)
print("gradcheck passed: InfoNCE over cosine similarities")
