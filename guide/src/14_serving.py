# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 14. Serving: the KV cache, paged attention, sampling and speculative decoding
#
# Generating token $t+1$ needs attention from the new query to the keys and values of all
# $t$ earlier tokens. Those never change once computed (a causal model cannot let a later token
# change an earlier one), so each layer keeps them in a **KV cache**: per new token, only its
# own $q, k, v$ are computed and
#
# $$o_{t} = \sum_{s \le t} \operatorname{softmax}_s\!\Big(\frac{q_t \cdot k_s}{\sqrt D}\Big)\, v_s ,$$
#
# $O(t)$ work per token instead of re-running the model over the whole prefix. The cache costs
# $2 \cdot n_{\text{layer}} \cdot H_{kv} \cdot D$ numbers per token. Below, a tiny Llama decodes a prompt one
# token at a time through its caches, and every step's logits must equal the full forward's.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.generation.sampling import sample_next, top_k_filter, top_p_filter
from tinyllm.kernels.paged_attention import paged_attention_forward
from tinyllm.models import Llama, ModelConfig
from tinyllm.serve.paged_cache import PagedKVCache
from tinyllm.serve.speculative import emitted_distribution, verify

rng = np.random.default_rng(0)
T = tinyllm.tensor
tinyllm.manual_seed(0)
config = ModelConfig(arch="llama", vocab_size=64, d_model=32, n_layer=2, n_head=4, n_kv_head=2,
                     block_size=32)  # fmt: skip
model = Llama(config).double()
tokens = rng.integers(0, 64, size=(2, 12))
with tinyllm.no_grad():
    full = model(T(tokens)).numpy()  # [batch, T, V]: every position at once
    caches = model.new_caches()
    prefill = model(T(tokens[:, :5]), caches=caches).numpy()  # the prompt in one call
    steps = [model(T(tokens[:, t : t + 1]), caches=caches).numpy() for t in range(5, 12)]
cached = np.concatenate([prefill] + steps, axis=1)
print("max |cached decoding - full forward| =", np.abs(cached - full).max())
assert np.allclose(cached, full, rtol=0, atol=1e-12)
head_dim = config.d_model // config.n_head
print("cache length:", len(caches[0]), " keys per layer:", tuple(caches[0].tensors["k"].shape))
per_token = 2 * config.n_layer * config.n_kv_head * head_dim * 8  # float64 here
assert sum(c.nbytes for c in caches) == per_token * tokens.size  # batch 2 x 12 tokens
print(f"{per_token} bytes per token (float64; half that in float32)")

# %% [markdown]
# ## Paged attention: the cache in fixed-size blocks
#
# A server holds many sequences of unknown final length. Reserving the maximum length for each
# wastes memory; vLLM's PagedAttention cuts the cache into blocks of $S$ tokens from one shared
# pool, and gives each sequence a **block table** mapping its logical block $b$ to a physical
# block: token $t$ lives at $\text{pool}[\text{table}[\lfloor t / S\rfloor],\, t \bmod S]$. Blocks are allocated as a
# sequence grows, freed when it ends, and shared between sequences with a common prefix
# (copied on the first write: copy-on-write). Attention reads the keys through the table and
# must compute exactly what contiguous attention computes. Below: three sequences of different
# lengths written into a pool through `PagedKVCache`'s tables, a fourth forked from the first
# (it shares the first's blocks until it writes), then the decode kernel against softmax
# attention on the contiguous keys (with GQA).

# %%
S, Hkv, H, D = 4, 2, 4, 8
cache = PagedKVCache(n_layer=1, num_blocks=16, block_size=S, n_kv_head=Hkv, head_dim=D,
                     dtype=np.float64, xp=np)  # fmt: skip
lengths = {"a": 9, "b": 14, "c": 5}
for seq in lengths:
    cache.new(seq)
for t in range(max(lengths.values())):  # the sequences grow together, a token per step,
    for seq, L in lengths.items():  # so their blocks interleave in the pool
        if t < L:
            cache.ensure(seq, t, t + 1)
contiguous = {}
for seq, L in lengths.items():
    k_seq, v_seq = rng.standard_normal((2, Hkv, L, D))
    blocks, offsets = cache.slots(seq, range(L))
    cache.K[0, blocks, :, offsets] = k_seq.transpose(1, 0, 2)  # token t -> (table[t // S], t % S)
    cache.V[0, blocks, :, offsets] = v_seq.transpose(1, 0, 2)
    contiguous[seq] = (k_seq, v_seq)
# "d" shares a's first 9 tokens, then writes its own 10th: only the block it writes is copied
cache.fork("a", "d")
cache.ensure("d", 8, 10)
k_d, v_d = (np.concatenate([x, rng.standard_normal((Hkv, 1, D))], axis=1) for x in contiguous["a"])
(blk,), (off,) = cache.slots("d", [9])
cache.K[0, blk, :, off], cache.V[0, blk, :, off] = k_d[:, 9], v_d[:, 9]
contiguous["d"], lengths["d"] = (k_d, v_d), 10
print("block tables:", cache.tables, " copy-on-write copies:", cache.copies)
assert (
    cache.tables["d"][:2] == cache.tables["a"][:2] and cache.tables["d"][2] != cache.tables["a"][2]
)

names = list(lengths)
q = rng.standard_normal((len(names), H, D))
width = max(len(t) for t in cache.tables.values())
tables = np.array([cache.tables[s] + [0] * (width - len(cache.tables[s])) for s in names])
out = paged_attention_forward(q, cache.K[0], cache.V[0], tables, [lengths[s] for s in names])
for i, seq in enumerate(names):
    k_seq, v_seq = contiguous[seq]
    for h in range(H):  # query head h reads kv head h // (H / Hkv)
        scores = k_seq[h // (H // Hkv)] @ q[i, h] / math.sqrt(D)
        p = np.exp(scores - scores.max())
        expect = (p / p.sum()) @ v_seq[h // (H // Hkv)]
        assert np.allclose(out[i, h], expect, rtol=0, atol=1e-12), (seq, h)
print("paged decode attention == softmax attention on the contiguous keys, for", names)

owner = np.full(16, -1)
for i, seq in enumerate(names):
    for b in cache.tables[seq]:
        owner[b] = i if owner[b] == -1 else len(names)  # a block two tables share
fig, ax = plt.subplots(figsize=(7, 1.6))
ax.imshow(owner[None], cmap=plt.get_cmap("tab10", len(names) + 2), vmin=-1, vmax=len(names))
for b in range(16):
    label = "free" if owner[b] == -1 else ("a+d" if owner[b] == len(names) else names[owner[b]])
    ax.text(b, 0, label, ha="center", va="center", fontsize=8)
ax.set_yticks([])
ax.set_xticks(range(16))
ax.set_xlabel("physical block of the pool")
plt.show()

# %% [markdown]
# ## Sampling: temperature, top-k, top-p
#
# From logits $z$, temperature $\tau$ samples from $p_\tau = \operatorname{softmax}(z / \tau)$: $\tau \to 0$ is greedy,
# $\tau = 1$ the model's distribution, $\tau > 1$ flatter. Top-$k$ keeps the $k$ largest logits;
# top-$p$ (nucleus) keeps the smallest set of most likely tokens whose mass reaches $p$ (the token
# that crosses $p$ is kept); the rest get $-\infty$ and the softmax renormalizes. Temperature has a
# closed-form derivative, the one a temperature-tuning loss needs (checked by `gradcheck`):
#
# $$\frac{\partial \log p_{\tau, i}}{\partial \tau} = -\frac{z_i - \mathbb{E}_{p_\tau}[z]}{\tau^2}, \qquad
# \frac{\partial H(p_\tau)}{\partial \tau} = \frac{\operatorname{Var}_{p_\tau}[z]}{\tau^3} \ge 0 ,$$
#
# so the entropy grows with $\tau$. The filters are checked against their definitions, and
# `sample_next`'s frequencies against the filtered distribution.

# %%
z = rng.standard_normal(10) * 2
order = np.argsort(-z)
kept_k = np.isfinite(top_k_filter(z[None], 3)[0])
assert set(np.flatnonzero(kept_k)) == set(order[:3])
p_sorted = np.exp(z[order] - z.max()) / np.exp(z - z.max()).sum()
n_nucleus = int(np.searchsorted(np.cumsum(p_sorted), 0.8) + 1)  # first prefix with mass >= 0.8
kept_p = np.isfinite(top_p_filter(z[None], 0.8)[0])
assert set(np.flatnonzero(kept_p)) == set(order[:n_nucleus])
print(f"top-3 keeps {sorted(order[:3].tolist())}; top-p 0.8 keeps the {n_nucleus} likeliest tokens")

tau = 0.7
target = np.where(kept_p, np.exp(z / tau - (z / tau).max()), 0.0)
target /= target.sum()
n_draws = 20_000
draws = sample_next(np.repeat(z[None], n_draws, 0), np.random.default_rng(1), tau, top_p=0.8)
freq = np.bincount(draws, minlength=10) / n_draws
print("max |frequency - p| =", np.abs(freq - target).max())
assert np.all(np.abs(freq - target) <= 5 * np.sqrt(target * (1 - target) / n_draws) + 1e-12)

zt = T(z, requires_grad=True)
tt = T(np.array(tau), requires_grad=True)
logp = F.log_softmax(zt / tt, dim=-1)
logp[0].backward()
p_tau = np.exp(logp.detach().numpy())
assert np.isclose(tt.grad.item(), -(z[0] - p_tau @ z) / tau**2, rtol=1e-12)
assert tinyllm.gradcheck(lambda z, t: F.log_softmax(z / t, dim=-1), [zt, tt])
print("d log p / d tau as derived; gradcheck passed: log_softmax(z / tau) w.r.t. z and tau")


def softmax_at(t):
    e = np.exp(z / t - (z / t).max())
    return e / e.sum()


taus = np.linspace(0.3, 3, 271)
entropy = np.array([-(softmax_at(t) * np.log(softmax_at(t))).sum() for t in taus])
variance = np.array([softmax_at(t) @ z**2 - (softmax_at(t) @ z) ** 2 for t in taus])
slope = np.gradient(entropy, taus)  # central differences, error O(h^2) at h = 0.01
assert np.allclose(slope[1:-1], (variance / taus**3)[1:-1], rtol=1e-3)
print("dH/dtau == Var[z] / tau^3 on", len(taus) - 2, "temperatures")

# %% [markdown]
# ## Speculative decoding keeps the target's distribution
#
# A small draft model $q$ proposes tokens; the large target $p$ scores all of them in one
# forward. Draft token $x \sim q$ is accepted with probability $\min(1, p(x)/q(x))$; on rejection a
# token is drawn from the residual $r \propto \max(0, p - q)$. The token emitted at a position has
#
# $$P(x) = q(x) \min\!\Big(1, \frac{p(x)}{q(x)}\Big) + \Big(1 - \sum_y \min(p, q)(y)\Big)\, \frac{\max(0, p(x) - q(x))}{\sum_y \max(0, p - q)(y)}
# = \min(p, q)(x) + \max(0, p - q)(x) = p(x) ,$$
#
# because $1 - \sum_y \min(p,q)(y) = \sum_y \max(0, p - q)(y)$. The output is distributed exactly as
# sampling from $p$, whatever the draft: a poor draft only lowers the acceptance rate
# $\sum_x \min(p, q)(x)$. Below, the closed form, then 20,000 runs of tinyllm's `verify` on a toy
# pair of distributions.

# %%
V = 6
p_target = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
q_draft = np.array([0.10, 0.40, 0.05, 0.25, 0.05, 0.15])  # a poor draft
assert np.allclose(emitted_distribution(p_target, q_draft), p_target, rtol=0, atol=1e-15)

gen = np.random.default_rng(2)
first, accepted = np.zeros(V), 0
n_runs = 20_000
for _ in range(n_runs):
    x = gen.choice(V, p=q_draft)  # the draft proposes one token (gamma = 1)
    emitted = verify(np.array([x]), q_draft[None], np.stack([p_target, p_target]), gen)
    first[emitted[0]] += 1
    accepted += len(emitted) == 2  # accepted: the draft token, then a bonus token from p
freq = first / n_runs
accept_rate = np.minimum(p_target, q_draft).sum()
print("target p       :", p_target)
print(
    "emitted (freq.):",
    np.round(freq, 3),
    f"  acceptance {accepted / n_runs:.3f} (closed form {accept_rate:.3f})",
)
# each frequency within 5 binomial standard deviations of p (a false alarm has odds ~1e-6)
assert np.all(np.abs(freq - p_target) <= 5 * np.sqrt(p_target * (1 - p_target) / n_runs))
assert abs(accepted / n_runs - accept_rate) <= 5 * np.sqrt(accept_rate * (1 - accept_rate) / n_runs)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
xs = np.arange(V)
axes[0].bar(xs - 0.2, q_draft, 0.4, label="draft q")
axes[0].bar(xs + 0.2, p_target, 0.4, label="target p")
axes[0].set_title("the two models")
axes[1].bar(xs - 0.2, p_target, 0.4, label="target p")
axes[1].bar(xs + 0.2, freq, 0.4, label="speculative, empirical")
axes[1].set_title(f"emitted tokens, {n_runs:,} runs")
for ax in axes:
    ax.set_xlabel("token")
    ax.legend()
plt.show()
