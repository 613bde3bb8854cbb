# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 4. Attention: the SDPA backward, masks, GQA and FlashAttention
#
# For one head, with $Q \in \mathbb{R}^{T_q \times D}$, $K, V \in \mathbb{R}^{T_k \times D}$ and $\tau = 1/\sqrt{D}$:
#
# $$S = \tau\, Q K^\top + M, \qquad P = \operatorname{softmax}_{\text{row}}(S), \qquad O = P V ,$$
#
# where $M_{ij} = -\infty$ hides key $j$ from query $i$ (causal: $j > i$). Backward, using
# the softmax rule of notebook 2 row by row and $\Delta_i = \sum_j P_{ij}\,\bar P_{ij} = \sum_d \bar O_{id} O_{id}$
# (because $O = PV$):
#
# $$\bar V = P^\top \bar O, \quad \bar P = \bar O V^\top, \quad \bar S = P \odot (\bar P - \Delta), \quad
# \bar Q = \tau\, \bar S K, \quad \bar K = \tau\, \bar S^\top Q .$$

# %%
import math
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
import tinyllm.kernels as K

rng = np.random.default_rng(0)
B, H, T, D = 1, 2, 6, 4
q, k, v = (tinyllm.tensor(rng.standard_normal((B, H, T, D)), requires_grad=True) for _ in range(3))
dO = rng.standard_normal((B, H, T, D))
F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(tinyllm.tensor(dO))

# the derivation in NumPy
Q, Kn, Vn = (t.detach().numpy() for t in (q, k, v))
tau = 1 / math.sqrt(D)
S = tau * Q @ Kn.swapaxes(-1, -2) + np.where(np.tril(np.ones((T, T))) > 0, 0.0, -np.inf)
P = np.exp(S - S.max(-1, keepdims=True))
P /= P.sum(-1, keepdims=True)
O = P @ Vn
dV = P.swapaxes(-1, -2) @ dO
dP = dO @ Vn.swapaxes(-1, -2)
Delta = (dO * O).sum(-1, keepdims=True)
dS = P * (dP - Delta)
dQ, dK = tau * dS @ Kn, tau * dS.swapaxes(-1, -2) @ Q
for name, ours, t in (("dQ", dQ, q), ("dK", dK, k), ("dV", dV, v)):
    print(name, "max |derivation - tinyllm| =", np.abs(ours - t.grad.numpy()).max())
    assert np.allclose(ours, t.grad.numpy(), atol=1e-12)

assert tinyllm.gradcheck(
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v]
)
print("gradcheck passed: causal scaled_dot_product_attention")

# %% [markdown]
# ## Grouped-query attention: gradients sum over shared heads
#
# With $H$ query heads and $H_{kv}$ key/value heads, query head $h$ reads kv head
# $\lfloor h / G \rfloor$, $G = H / H_{kv}$. A kv head is used $G$ times, so by the chain rule
# its gradient is the **sum** of the $G$ gradients it would get if each query head had its own
# copy: $\bar K_g = \sum_{h \in \text{group } g} \bar K^{(h)}$.

# %%
H, Hkv = 4, 2
G = H // Hkv
qg = tinyllm.tensor(rng.standard_normal((1, H, T, D)), requires_grad=True)
kg, vg = (tinyllm.tensor(rng.standard_normal((1, Hkv, T, D)), requires_grad=True) for _ in range(2))
dOg = tinyllm.tensor(rng.standard_normal((1, H, T, D)))
F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=True).backward(dOg)

# the same attention with one private copy of K, V per query head (plain MHA)
k_rep = tinyllm.tensor(np.repeat(kg.detach().numpy(), G, axis=1), requires_grad=True)
v_rep = tinyllm.tensor(np.repeat(vg.detach().numpy(), G, axis=1), requires_grad=True)
F.scaled_dot_product_attention(qg.detach(), k_rep, v_rep, is_causal=True).backward(dOg)
summed_dk = k_rep.grad.numpy().reshape(1, Hkv, G, T, D).sum(2)
summed_dv = v_rep.grad.numpy().reshape(1, Hkv, G, T, D).sum(2)
print("max |dK_gqa - sum over group of dK_mha| =", np.abs(kg.grad.numpy() - summed_dk).max())
assert np.allclose(kg.grad.numpy(), summed_dk, atol=1e-12)
assert np.allclose(vg.grad.numpy(), summed_dv, atol=1e-12)
assert tinyllm.gradcheck(
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
    [qg, kg, vg],
)
print("gradcheck passed: grouped-query attention")

# %% [markdown]
# ## FlashAttention: the online softmax, and the backward from the saved log-sum-exp
#
# FlashAttention never forms the $[T_q, T_k]$ matrices. It visits keys in blocks and keeps,
# per query row, a running maximum $m$, a running denominator $\ell$ and an unnormalized output
# $\tilde o$. For a new block of scores $s$:
#
# $$m' = \max(m, \max_j s_j), \quad \ell' = e^{m - m'}\ell + \sum_j e^{s_j - m'}, \quad
# \tilde o' = e^{m - m'}\tilde o + \sum_j e^{s_j - m'} v_j ,$$
#
# and at the end $O = \tilde o / \ell$ and $\operatorname{lse} = m + \log \ell$. Backward needs $P$ again, and
# recomputes it block by block from the one saved number per row: $P_{ij} = e^{S_{ij} - \operatorname{lse}_i}$.
# Below is that algorithm in NumPy (one head, causal), checked against the naive kernel.


# %%
def flash_forward(q, k, v, block=16):
    T, D = q.shape
    tau = 1 / math.sqrt(D)
    m = np.full(T, -np.inf)
    ell = np.zeros(T)
    o = np.zeros((T, D))
    for j0 in range(0, T, block):
        s = tau * q @ k[j0 : j0 + block].T  # [T, block]: one tile of scores
        cols = np.arange(j0, min(j0 + block, T))
        s = np.where(cols[None, :] <= np.arange(T)[:, None], s, -np.inf)  # causal
        m_new = np.maximum(m, s.max(1))
        alpha = np.exp(m - m_new)
        p = np.exp(s - m_new[:, None])
        ell = alpha * ell + p.sum(1)
        o = alpha[:, None] * o + p @ v[j0 : j0 + block]
        m = m_new
    return o / ell[:, None], m + np.log(ell)


def flash_backward(do, q, k, v, o, lse, block=16):
    T, D = q.shape
    tau = 1 / math.sqrt(D)
    delta = (do * o).sum(1)  # Delta_i = sum_d dO_id O_id
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for j0 in range(0, T, block):
        kj, vj = k[j0 : j0 + block], v[j0 : j0 + block]
        s = tau * q @ kj.T
        cols = np.arange(j0, min(j0 + block, T))
        s = np.where(cols[None, :] <= np.arange(T)[:, None], s, -np.inf)
        p = np.exp(s - lse[:, None])  # P recomputed from the saved lse
        dv[j0 : j0 + block] = p.T @ do
        ds = p * (do @ vj.T - delta[:, None])
        dq += tau * ds @ kj
        dk[j0 : j0 + block] = tau * ds.T @ q
    return dq, dk, dv


T2, D2 = 40, 8
q1, k1, v1, do1 = (rng.standard_normal((T2, D2)) for _ in range(4))
o1, lse1 = flash_forward(q1, k1, v1)
o_ref, lse_ref = K.naive_attention_forward(*(a[None, None] for a in (q1, k1, v1)), causal=True)
grads_ref = K.naive_attention_backward(
    do1[None, None], *(a[None, None] for a in (q1, k1, v1)), o_ref, lse_ref, causal=True
)
print(
    "O   max diff:",
    np.abs(o1 - o_ref[0, 0]).max(),
    "  lse max diff:",
    np.abs(lse1 - lse_ref[0, 0]).max(),
)
assert np.allclose(o1, o_ref[0, 0], atol=1e-12) and np.allclose(lse1, lse_ref[0, 0], atol=1e-12)
for name, ours, ref in zip(
    ("dq", "dk", "dv"), flash_backward(do1, q1, k1, v1, o1, lse1), grads_ref
):
    print(name, "max diff:", np.abs(ours - ref[0, 0]).max())
    assert np.allclose(ours, ref[0, 0], atol=1e-12)

# %% [markdown]
# ## Memory against sequence length, measured
#
# Peak memory (Python's `tracemalloc`, which sees NumPy's allocations) of one forward +
# backward of a single head, float32, $D = 32$: the naive algorithm holds $S$ and $P$, $O(T^2)$; the
# tiled one holds $O(T D)$ plus one tile of $T \times 16$ scores.


# %%
def peak_bytes(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


lengths = [64, 128, 256, 512, 1024]
naive_peak, tiled_peak = [], []
for T_ in lengths:
    qq, kk, vv, dd = (rng.standard_normal((T_, 32)).astype(np.float32) for _ in range(4))

    def naive(qq=qq, kk=kk, vv=vv, dd=dd):
        a = [x[None, None] for x in (qq, kk, vv)]
        with K.use("reference"):  # the reference tier is the naive algorithm
            o, lse = K.naive_attention_forward(*a, causal=True)
            K.naive_attention_backward(dd[None, None], *a, o, lse, causal=True)

    def tiled(qq=qq, kk=kk, vv=vv, dd=dd):
        o, lse = flash_forward(qq, kk, vv)
        flash_backward(dd, qq, kk, vv, o, lse)

    naive_peak.append(peak_bytes(naive))
    tiled_peak.append(peak_bytes(tiled))
for T_, a, b in zip(lengths, naive_peak, tiled_peak):
    print(f"T {T_:5d}: naive {a / 2**20:7.2f} MiB   tiled {b / 2**20:6.2f} MiB")
# quadrupling from T to 2T is the signature of an O(T^2) buffer; the tiled peak only doubles
assert naive_peak[-1] / naive_peak[-2] > 3.0 and tiled_peak[-1] / tiled_peak[-2] < 2.5

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(lengths, np.array(naive_peak) / 2**20, "o-", label="naive: S and P materialized")
ax.loglog(lengths, np.array(tiled_peak) / 2**20, "s-", label="tiled online softmax (lse saved)")
ax.set_xlabel("sequence length T")
ax.set_ylabel("peak MiB, forward + backward")
ax.legend()
plt.show()

# %% [markdown]
# What the causal mask does: the attention probabilities of head 0 from the first cell.

# %%
fig, ax = plt.subplots(figsize=(3.5, 3))
ax.imshow(P[0, 0], cmap="viridis")
ax.set_xlabel("key j")
ax.set_ylabel("query i")
ax.set_title("causal P")
plt.show()
