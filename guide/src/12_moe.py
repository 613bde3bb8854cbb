# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 12. Mixture of experts: routers, balancing losses, dispatch and combine
#
# A sparse MoE layer replaces the one feed-forward network of a block by $E$ experts (each a
# SwiGLU FFN, notebook 6) and a **router** that sends each token to $k$ of them:
#
# $$y(x) = \sum_{i \in S(x)} g_i(x)\, \text{FFN}_i(x), \qquad \ell = x W_r^\top \in \mathbb{R}^E, \qquad S(x) = \operatorname{top-}k(\ell) .$$
#
# A token pays for $k$ experts while the layer holds $E$. Mixtral's gates are the softmax
# probabilities $p = \operatorname{softmax}(\ell)$ of the chosen experts, renormalized:
# $g_i = p_i / \sum_{j \in S} p_j = e^{\ell_i} / \sum_{j \in S} e^{\ell_j}$, that is a softmax over the chosen logits
# only. So the backward is notebook 2's softmax rule restricted to $S$, and zero elsewhere:
#
# $$\bar\ell_j = g_j \Big(\bar g_j - \sum_{i \in S} g_i \bar g_i\Big) \;\; (j \in S), \qquad \bar\ell_j = 0 \;\; (j \notin S),
# \qquad \bar W_r = \bar\ell^\top x .$$
#
# The choice $S$ itself is piecewise constant in $x$: it has no gradient, and the router learns
# only through the gates of the experts it picked.

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.nn.moe import AuxFreeRouter, MoE, TopKRouter
from tinyllm.optim import AdamW

rng = np.random.default_rng(0)
T = tinyllm.tensor
Ntok, C, E, k = 6, 5, 4, 2
tinyllm.manual_seed(0)
router = TopKRouter(C, E, top_k=k, order="softmax_topk").to(dtype="float64")
x_ = rng.standard_normal((Ntok, C))
routing = router(T(x_))
logits = x_ @ router.weight.detach().numpy().T
S = np.argsort(-logits, axis=1)[:, :k]  # top-k by hand
assert (routing.expert_index == S).all()
chosen = np.take_along_axis(logits, S, axis=1)
softmax_of_chosen = np.exp(chosen) / np.exp(chosen).sum(1, keepdims=True)
print(
    "gates == softmax over the chosen logits:",
    np.abs(routing.gates.detach().numpy() - softmax_of_chosen).max(),
)
assert np.allclose(routing.gates.detach().numpy(), softmax_of_chosen, atol=1e-15)
other_order = TopKRouter(C, E, top_k=k, order="topk_softmax").to(dtype="float64")
other_order.weight = router.weight  # GShard's order: top-k of the logits, then softmax
assert np.allclose(
    other_order(T(x_)).gates.detach().numpy(), routing.gates.detach().numpy(), atol=1e-15
)

# the backward by hand against tinyllm's, for a random upstream gradient of the gates
dg = rng.standard_normal((Ntok, k))
routing.gates.backward(T(dg))
g = softmax_of_chosen
dl_chosen = g * (dg - (g * dg).sum(1, keepdims=True))
dl = np.zeros((Ntok, E))
np.put_along_axis(dl, S, dl_chosen, axis=1)  # zero for the experts not chosen
print("dW_r: max |by hand - tinyllm| =", np.abs(dl.T @ x_ - router.weight.grad.numpy()).max())
assert np.allclose(dl.T @ x_, router.weight.grad.numpy(), atol=1e-14)

x = T(x_, requires_grad=True)
assert tinyllm.gradcheck(lambda x: router(x).gates, [x])
(row,) = gradcheck_parameters(router, lambda: (router(x).gates * T(dg)).sum())
assert row["passed"]
print("gradcheck passed: the top-k router's gates, w.r.t. the tokens and the router weight")

# %% [markdown]
# ## Keeping the experts busy: the Switch loss and the z-loss
#
# Nothing in the task loss stops the router from sending every token to the same few experts
# (which then train faster and get chosen more). Switch Transformer's auxiliary loss, with
# $f_e$ the fraction of routed slots that went to expert $e$ and $P_e = \frac1N \sum_n p_{ne}$ the
# mean router probability:
#
# $$\mathcal{L}_{\text{switch}} = E \sum_e f_e P_e , \qquad \frac{\partial \mathcal{L}_{\text{switch}}}{\partial p_{ne}} = \frac{E f_e}{N} .$$
#
# It equals 1 when routing is uniform ($f_e = P_e = 1/E$) and $E$ when collapsed onto one
# expert. $f$ is a count, so it gets no gradient: the loss pushes down the probability of the
# experts that are over-used now. ST-MoE's **z-loss** keeps the router logits small (large
# logits make the softmax saturate and round badly in low precision):
#
# $$\mathcal{L}_z = \frac1N \sum_n \Big(\log \sum_e e^{\ell_{ne}}\Big)^2 , \qquad
# \frac{\partial \mathcal{L}_z}{\partial \ell_{ne}} = \frac{2}{N} \operatorname{lse}_n\, p_{ne} ,$$
#
# and $(\log E)^2$ at zero logits.

# %%
uniform = T(np.full((8, E), 1 / E))
balanced = T(np.arange(8)[:, None] % E)  # each expert gets 2 of the 8 tokens
collapsed = T(np.zeros((8, 1), np.int64))
onehot = T(np.eye(E)[np.zeros(8, int)])
print("switch loss, balanced:", F.switch_load_balancing_loss(uniform, balanced).item(),
      " collapsed:", F.switch_load_balancing_loss(onehot, collapsed).item())  # fmt: skip
assert np.isclose(F.switch_load_balancing_loss(uniform, balanced).item(), 1.0)
assert np.isclose(F.switch_load_balancing_loss(onehot, collapsed).item(), E)
assert np.isclose(F.router_z_loss(tinyllm.zeros(8, E)).item(), np.log(E) ** 2)

probs = T(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), requires_grad=True)
F.switch_load_balancing_loss(probs, T(S)).backward()
f = np.bincount(S.ravel(), minlength=E) / S.size
assert np.allclose(probs.grad.numpy(), np.broadcast_to(E * f / Ntok, (Ntok, E)), atol=1e-15)
lg = T(logits, requires_grad=True)
F.router_z_loss(lg).backward()
lse = np.log(np.exp(logits).sum(1))
assert np.allclose(lg.grad.numpy(), 2 / Ntok * lse[:, None] * probs.detach().numpy(), atol=1e-14)
assert tinyllm.gradcheck(lambda p: F.switch_load_balancing_loss(p, T(S)), [probs])
assert tinyllm.gradcheck(F.router_z_loss, [lg])
print("closed forms hold; gradients as derived; gradcheck passed: switch loss, z-loss")

# %% [markdown]
# ## Balancing without a loss: DeepSeek-V3's selection bias
#
# DeepSeek-V3 scores experts with $s = \sigma(\ell)$ and chooses the top $k$ of $s + b$, where $b \in \mathbb{R}^E$
# is a bias used **for the choice only**: the gates are $g_i = s_i / \sum_{j \in S} s_j$, with no $b$ in
# them, so no gradient flows through $b$. After each step it moves against the load:
#
# $$b_e \leftarrow b_e + \gamma \operatorname{sign}\big(\bar c - c_e\big), \qquad c_e = \text{rows routed to } e,\; \bar c = \operatorname{mean}_e c_e .$$
#
# Below, a router that strongly prefers expert 0 on a fixed batch: updating $b$ alone (no
# training) evens out the load, and the gates keep their bias-free formula throughout.

# %%
tinyllm.manual_seed(1)
aux_free = AuxFreeRouter(C, E, top_k=1, bias_update_rate=0.02).to(dtype="float64")
with tinyllm.no_grad():
    aux_free.weight[0] += 1.0  # every token leans toward expert 0
batch = T(rng.standard_normal((64, C)) + 1.0)
loads = []
for _ in range(150):
    r = aux_free(batch)
    counts = np.bincount(r.expert_index.ravel(), minlength=E)
    loads.append(counts)
    aux_free.update_bias(counts)
    s = 1 / (1 + np.exp(-(batch.numpy() @ aux_free.weight.detach().numpy().T)))
    chosen = np.take_along_axis(s, r.expert_index, axis=1)
    assert np.allclose(r.gates.detach().numpy(), chosen / chosen.sum(1, keepdims=True), atol=1e-15)
loads = np.array(loads)
print("rows per expert, first step:", loads[0], "  last step:", loads[-1],
      "  bias:", np.round(aux_free.e_score_correction_bias.numpy(), 2))  # fmt: skip
# a fixed step size makes b hop around the balancing point, so the load alternates between
# two patterns; averaged over the last 20 steps it is even within 25 %
print("mean rows per expert over the last 20 steps:", loads[-20:].mean(0))
assert loads[0].max() > 2 * 64 / E and loads[-20:].mean(0).max() < 1.25 * 64 / E

# %% [markdown]
# ## Dispatch and combine, and the layer's gradient
#
# The layer sorts the kept (token, slot) pairs by expert, so each expert runs one GEMM chain
# on contiguous rows. With `token_index[m]` the token of row $m$ and $w_m$ its gate:
#
# $$\text{rows}_m = x_{\text{token}(m)} \quad\Rightarrow\quad \bar x_n = \sum_{m:\, \text{token}(m) = n} \overline{\text{rows}}_m \qquad (\text{gather} \to \text{scatter-add}),$$
#
# $$\text{out}_n = \sum_{m:\, \text{token}(m) = n} w_m\, y_m \quad\Rightarrow\quad \bar y_m = w_m\, \overline{\text{out}}_{\text{token}(m)}, \quad \bar w_m = \langle y_m, \overline{\text{out}}_{\text{token}(m)}\rangle .$$
#
# The layer must equal the plainest loop, token by token over its chosen experts; then
# `gradcheck` checks both ops and every parameter of the layer.


# %%
def expert_np(expert, v):
    """SwiGLU in NumPy: w2(silu(w1 v) * w3 v)."""
    w1, w2, w3 = (getattr(expert, n).weight.detach().numpy() for n in ("w1", "w2", "w3"))
    a = v @ w1.T
    return (a / (1 + np.exp(-a)) * (v @ w3.T)) @ w2.T


tinyllm.manual_seed(0)
moe = MoE(C, num_experts=E, top_k=k, expert_hidden=6, z_loss_coef=0.1).to(dtype="float64")
moe.eval()
xs = rng.standard_normal((2, 4, C))
with tinyllm.no_grad():
    y = moe(T(xs)).numpy()
flat = xs.reshape(-1, C)
r = moe.route(T(flat))
loop = np.zeros_like(flat)
for n in range(flat.shape[0]):
    for j, e in enumerate(r.expert_index[n]):
        loop[n] += r.gates.detach().numpy()[n, j] * expert_np(moe.experts[e], flat[n])
print("max |MoE layer - per-token loop| =", np.abs(y.reshape(-1, C) - loop).max())
assert np.allclose(y.reshape(-1, C), loop, atol=1e-13)

token_index, weights, counts = r.rows()
print("rows per expert:", counts, " token of each row:", token_index)
n_tokens, n_rows = flat.shape[0], len(token_index)
tokens_in = T(rng.standard_normal((n_tokens, C)), requires_grad=True)
y_rows = T(rng.standard_normal((n_rows, C)), requires_grad=True)
w_rows = T(rng.standard_normal(n_rows), requires_grad=True)
ti = T(token_index)
assert tinyllm.gradcheck(lambda v: F.moe_dispatch(v, ti), [tokens_in])
assert tinyllm.gradcheck(lambda y, w: F.moe_combine(y, w, ti, n_tokens), [y_rows, w_rows])

target = T(rng.standard_normal((2, 4, C)))


def layer_loss():
    return F.mse_loss(moe(T(xs)), target) + moe.aux_loss  # + Switch loss and z-loss


table = gradcheck_parameters(moe, layer_loss, max_elements=32, n_directions=3)
assert all(row["passed"] for row in table)
print(f"gradcheck passed: moe_dispatch, moe_combine, and all {len(table)} parameters of the layer")

# %% [markdown]
# ## Expert load during training
#
# A toy task with structure the experts can split: tokens come from 4 clusters, and the target
# is a different linear map of the token in each cluster. The same MoE layer (8 experts,
# top-2) trains for 60 steps three ways: no balancing, the Switch loss, and the aux-free bias.
# The picture is the share of routed rows each expert takes, step by step; the entropy of the
# final load (mean of the last 10 steps), $H(c) / \log E$, is 1 for perfectly even load.
# Without balancing, experts that lose the first few steps stop receiving tokens at all and
# never train: the collapse the balancing terms exist to prevent.


# %%
def load_history(router, aux_coef, steps=60, seed=0):
    tinyllm.manual_seed(seed)
    data = np.random.default_rng(seed)
    maps = data.standard_normal((4, 8, 8)) / np.sqrt(8)
    centers = 2 * data.standard_normal((4, 8))
    layer = MoE(8, num_experts=8, top_k=2, expert_hidden=16, router=router,
                aux_loss_coef=aux_coef, bias_update_rate=0.01)  # fmt: skip
    opt = AdamW(layer.parameters(), lr=1e-2, weight_decay=0.0)
    history = []
    for _ in range(steps):
        cluster = data.integers(0, 4, 128)
        tokens = centers[cluster] + 0.3 * data.standard_normal((128, 8))
        targets = np.einsum("nij,nj->ni", maps[cluster], tokens)
        loss = F.mse_loss(layer(T(tokens.astype(np.float32))), T(targets.astype(np.float32)))
        if layer.aux_loss is not None:
            loss = loss + layer.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(layer.last_load / layer.last_load.sum())
    return np.array(history)


runs = {
    "no balancing": load_history("softmax_topk", 0.0),
    "Switch loss (0.1)": load_history("softmax_topk", 0.1),
    "aux-free bias": load_history("aux_free", 0.0),
}
entropies = {}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
for ax, (name, history) in zip(axes, runs.items()):
    assert np.allclose(history.sum(1), 1.0)  # every step routes all 2 x 128 slots
    final = history[-10:].mean(0)
    entropy = -(final * np.log(np.maximum(final, 1e-12))).sum() / np.log(8)
    idle = int((final < 0.02).sum())
    print(f"{name:18s} final load entropy {entropy:.3f}, largest share {final.max():.0%},",
          f"{idle} of 8 experts under 2 % of the rows")  # fmt: skip
    entropies[name] = entropy
    ax.stackplot(np.arange(len(history)), history.T)
    ax.set_title(f"{name}\nentropy {entropy:.2f}")
    ax.set_xlabel("step")
axes[0].set_ylabel("share of routed rows")
plt.show()
# on this task and seed, both kinds of balancing spread the load more than none does
assert min(entropies["Switch loss (0.1)"], entropies["aux-free bias"]) > entropies["no balancing"]
