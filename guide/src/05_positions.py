# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 5. Positions: RoPE, ALiBi, T5 buckets and sinusoids
#
# Attention by itself is blind to order. Four ways to tell it where tokens are:
#
# **RoPE** rotates each pair $(a_i, b_i)$ of a query or key at position $m$ by the angle $m\theta_i$,
# $\theta_i = \text{base}^{-2i/D}$:
#
# $$\begin{pmatrix} a_i' \\ b_i' \end{pmatrix} = \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
# \begin{pmatrix} a_i \\ b_i \end{pmatrix} = R(m\theta_i) \begin{pmatrix} a_i \\ b_i \end{pmatrix}.$$
#
# Since $R(\alpha)^\top R(\beta) = R(\beta - \alpha)$, the score $\langle R_m q, R_n k \rangle = \langle q, R_{n-m} k\rangle$
# depends only on the offset $n - m$. A rotation is orthogonal, so the backward is the rotation
# by $-m\theta_i$: $\bar x = R(m\theta)^\top \bar y$.
#
# **ALiBi** adds $-m_h |i - j|$ to head $h$'s scores (slopes $m_h = 2^{-8h/n}$); **T5** adds a learned
# bias per *bucket* of the relative distance; the **sinusoidal** encoding adds
# $\text{PE}[t, 2i] = \sin(t/\text{base}^{2i/D})$, $\text{PE}[t, 2i+1] = \cos(t/\text{base}^{2i/D})$ to the embeddings.

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F

rng = np.random.default_rng(0)
T, D = 32, 16
x = tinyllm.tensor(rng.standard_normal((T, D)), requires_grad=True)
y = F.rotary_embedding(x)

# the rotation by hand (half-split layout: pairs (i, i + D/2))
theta = 10000.0 ** (-np.arange(D // 2) * 2 / D)
ang = np.arange(T)[:, None] * theta[None, :]
a, b = x.detach().numpy()[:, : D // 2], x.detach().numpy()[:, D // 2 :]
by_hand = np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], 1)
print("max |by hand - F.rotary_embedding| =", np.abs(by_hand - y.detach().numpy()).max())
assert np.allclose(by_hand, y.detach().numpy(), atol=1e-12)

# backward = rotation by -angle
dy = rng.standard_normal((T, D))
y.backward(tinyllm.tensor(dy))
da, db = dy[:, : D // 2], dy[:, D // 2 :]
dx = np.concatenate([da * np.cos(ang) + db * np.sin(ang), db * np.cos(ang) - da * np.sin(ang)], 1)
assert np.allclose(dx, x.grad.numpy(), atol=1e-12)

# relative property: <R_m q, R_n k> depends on n - m only
qv, kv = rng.standard_normal(D), rng.standard_normal(D)
rot_q = F.rotary_embedding(tinyllm.tensor(np.tile(qv, (T, 1)))).numpy()
rot_k = F.rotary_embedding(tinyllm.tensor(np.tile(kv, (T, 1)))).numpy()
scores = rot_q @ rot_k.T
assert np.allclose(scores[3, 10], scores[13, 20]) and np.allclose(scores[0, 5], scores[20, 25])
print("score(3, 10) = score(13, 20) =", round(scores[3, 10], 6))

assert tinyllm.gradcheck(lambda x: F.rotary_embedding(x), [x])
assert tinyllm.gradcheck(lambda x: F.rotary_embedding(x, layout="interleaved", offset=5), [x])
print("gradcheck passed: rotary_embedding (half and interleaved)")

# %% [markdown]
# ALiBi's bias goes into attention as a float mask, and a float mask is differentiable: a
# learnable slope gets the gradient $\bar m_h = \sum_{i,j} \bar S_{hij}\, (-|i - j|)$.

# %%
H = 4
dist = np.abs(np.arange(T)[:, None] - np.arange(T)[None, :])
alibi = F.alibi_bias(H, T).numpy()
slopes = F.alibi_slopes(H).numpy()
assert np.allclose(alibi, -slopes[:, None, None] * dist)
print("ALiBi slopes:", slopes)

q, k, v = (tinyllm.tensor(rng.standard_normal((1, H, T, 8)), requires_grad=True) for _ in range(3))
m = tinyllm.tensor(slopes.astype(np.float64), requires_grad=True)
neg_dist = tinyllm.tensor(-dist.astype(np.float64))


def alibi_attention(q, k, v, m):
    bias = m.reshape(H, 1, 1) * neg_dist  # [H, T, T], differentiable in m
    causal = tinyllm.tensor(np.where(np.tril(np.ones((T, T))) > 0, 0.0, -np.inf))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias + causal)


assert tinyllm.gradcheck(alibi_attention, [q, k, v, m])
print("gradcheck passed: attention with learnable ALiBi slopes")

# %% [markdown]
# ## Pictures: what each does to attention
#
# For RoPE we take the *same* query and key vector at every position, so any structure in the
# scores comes from the positions alone. ALiBi's bias, T5's buckets and the sinusoidal table
# are drawn directly.

# %%
rel = np.arange(-T + 1, T)
buckets = F.relative_position_bucket(
    tinyllm.tensor(rel), bidirectional=True, num_buckets=16, max_distance=64
).numpy()
pe = F.sinusoidal_position_encoding(T, D).numpy()
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
axes[0].imshow(scores, cmap="RdBu_r")
axes[0].set_title("RoPE: q_m . k_n (same q, k everywhere)")
axes[1].imshow(alibi[0], cmap="viridis")
axes[1].set_title(f"ALiBi bias, head 0 (slope {slopes[0]:.3g})")
axes[2].step(rel, buckets, where="mid")
axes[2].set_title("T5 bucket of key - query")
axes[2].set_xlabel("relative position")
axes[3].imshow(pe.T, aspect="auto", cmap="RdBu_r")
axes[3].set_title("sinusoidal PE (dims x positions)")
for ax in axes[[0, 1]]:
    ax.set_xlabel("key n")
    ax.set_ylabel("query m")
plt.tight_layout()
plt.show()
