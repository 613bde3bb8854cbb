# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 15. Alignment: DPO, PPO's clipped objective, and GAE
#
# RLHF maximizes a reward while staying close to a reference policy $\pi_{\text{ref}}$:
# $\max_\pi \mathbb{E}_{y \sim \pi}[r(x, y)] - \beta\, \mathrm{KL}(\pi \,\|\, \pi_{\text{ref}})$. Its maximizer has a closed form,
#
# $$\pi^*(y \mid x) = \frac{1}{Z(x)}\, \pi_{\text{ref}}(y \mid x)\, e^{r(x, y)/\beta}
# \quad\Longleftrightarrow\quad r(x, y) = \beta \log \frac{\pi^*(y \mid x)}{\pi_{\text{ref}}(y \mid x)} + \beta \log Z(x).$$
#
# **DPO** (Rafailov et al. 2023) substitutes this reward into the Bradley-Terry model of a
# preference $y_w \succ y_l$, $P = \sigma(r_w - r_l)$; $Z$ cancels, and the policy is fitted directly:
#
# $$\mathcal{L}_{\text{DPO}} = -\log \sigma(\beta h), \qquad h = \log\frac{\pi(y_w)}{\pi_{\text{ref}}(y_w)} - \log\frac{\pi(y_l)}{\pi_{\text{ref}}(y_l)},$$
#
# $$\frac{\partial \mathcal{L}}{\partial \log \pi(y_w)} = -\beta\, \sigma(-\beta h) = -\frac{\partial \mathcal{L}}{\partial \log \pi(y_l)} ,$$
#
# so each pair pushes the chosen response up and the rejected one down, weighted by how wrong
# the implicit reward currently ranks them ($\beta/2$ each at $\pi = \pi_{\text{ref}}$). IPO replaces the
# log-sigmoid by $(h - \tfrac{1}{2\beta})^2$.

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.alignment import compute_gae, dpo_loss, ppo_policy_loss, sequence_logprobs
from tinyllm.optim import AdamW

rng = np.random.default_rng(0)
T = tinyllm.tensor
B, beta = 5, 0.1
pol_w, pol_l = (T(rng.standard_normal(B) - 5, requires_grad=True) for _ in range(2))
ref_w, ref_l = (T(rng.standard_normal(B) - 5) for _ in range(2))
losses, chosen_rewards, rejected_rewards = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta=beta)
losses.sum().backward()
h = (pol_w.detach().numpy() - ref_w.numpy()) - (pol_l.detach().numpy() - ref_l.numpy())
sigmoid = 1 / (1 + np.exp(beta * h))  # sigma(-beta h)
assert np.allclose(losses.detach().numpy(), np.log1p(np.exp(-beta * h)), rtol=0, atol=1e-14)
assert np.allclose(pol_w.grad.numpy(), -beta * sigmoid, rtol=0, atol=1e-15)
assert np.allclose(pol_l.grad.numpy(), beta * sigmoid, rtol=0, atol=1e-15)
print("DPO loss and dL/dlog pi(y_w), dL/dlog pi(y_l) as derived")

at_ref, _, _ = dpo_loss(ref_w.clone().requires_grad_(), ref_l, ref_w, ref_l, beta=beta)
assert np.allclose(at_ref.detach().numpy(), np.log(2))  # h = 0: ln 2

for loss_type, smoothing in (("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("robust", 0.1)):
    assert tinyllm.gradcheck(
        lambda w, l, lt=loss_type, ls=smoothing: dpo_loss(w, l, ref_w, ref_l, beta, lt, ls)[0],
        [pol_w, pol_l],
    )
print("gradcheck passed: DPO (sigmoid, cDPO), IPO, robust DPO")

# %% [markdown]
# The policy's log-probabilities come from its logits: $\log \pi(y) = \sum_t m_t \log \operatorname{softmax}(z_t)_{y_t}$
# over the response tokens ($m_t = 1$), so the gradient reaching the logits is
# $\bar z_t = \bar{\log\pi}\; m_t\, (\mathbb{1}_{y_t} - \operatorname{softmax}(z_t))$. Below, the whole path from logits
# to the DPO loss, gradchecked (the prompt and padding positions must get exactly zero).

# %%
V, Tlen = 7, 5
mask = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=float)  # prompt, response, padding
labels = rng.integers(0, V, size=(2, Tlen))
logits_w, logits_l = (T(rng.standard_normal((2, Tlen, V)), requires_grad=True) for _ in range(2))
ref_lp = [T(rng.standard_normal(2) - 5) for _ in range(2)]


def dpo_from_logits(zw, zl):
    lw = sequence_logprobs(zw, labels, mask, reduction="sum")
    ll = sequence_logprobs(zl, labels, mask, reduction="sum")
    return dpo_loss(lw, ll, ref_lp[0], ref_lp[1], beta=0.5)[0].sum()


dpo_from_logits(logits_w, logits_l).backward()
assert np.abs(logits_w.grad.numpy()[mask == 0]).max() == 0.0  # masked positions: no gradient
lw = sequence_logprobs(logits_w.detach(), labels, mask, reduction="sum").numpy()
ll = sequence_logprobs(logits_l.detach(), labels, mask, reduction="sum").numpy()
hh = (lw - ref_lp[0].numpy()) - (ll - ref_lp[1].numpy())
dlogpi = -0.5 / (1 + np.exp(0.5 * hh))  # dL/dlog pi(y_w), per pair
z = logits_w.detach().numpy()
soft = np.exp(z - z.max(-1, keepdims=True))
soft /= soft.sum(-1, keepdims=True)
onehot = np.eye(V)[labels]
by_hand = dlogpi[:, None, None] * mask[..., None] * (onehot - soft)
assert np.allclose(logits_w.grad.numpy(), by_hand, rtol=0, atol=1e-14)
assert tinyllm.gradcheck(dpo_from_logits, [logits_w, logits_l])
print("gradient on the logits as derived; gradcheck passed: logits -> log pi(y) -> DPO loss")

# %% [markdown]
# ## DPO recovers the closed-form optimum
#
# One prompt, $K$ possible responses, a true reward $r$ and preferences drawn from Bradley-Terry.
# The expected DPO loss over all pairs, $\sum_{i \ne j} \sigma(r_i - r_j)\,\big(-\log\sigma(\beta h_{ij})\big)$, is minimized when
# $\sigma(\beta h_{ij}) = \sigma(r_i - r_j)$ for every pair, i.e. at $\pi \propto \pi_{\text{ref}}\, e^{r/\beta}$: the RLHF solution, with
# no reward model and no sampling. A softmax policy trained on this loss must land on it.

# %%
K, beta_toy = 6, 0.5
reward = rng.standard_normal(K)
ref_logits = rng.standard_normal(K)
ref_logp = ref_logits - np.log(np.exp(ref_logits).sum())
prefer = 1 / (1 + np.exp(-(reward[:, None] - reward[None, :])))  # P(i preferred to j)
I, J = np.nonzero(~np.eye(K, dtype=bool))  # all ordered pairs i != j
theta = T(ref_logits.copy(), requires_grad=True)  # the policy starts at the reference
opt = AdamW([theta], lr=0.05, weight_decay=0.0)
history = []
for _ in range(400):
    logp = F.log_softmax(theta, dim=0)
    pair_losses, _, _ = dpo_loss(logp[I], logp[J], T(ref_logp[I]), T(ref_logp[J]), beta=beta_toy)
    loss = (pair_losses * T(prefer[I, J])).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    history.append(loss.item())
optimum = ref_logp + reward / beta_toy
optimum -= np.log(np.exp(optimum).sum())
learned = F.log_softmax(theta, dim=0).detach().numpy()
print("max |log pi_DPO - log pi*| =", np.abs(learned - optimum).max())
assert np.allclose(learned, optimum, rtol=0, atol=1e-6)  # 400 Adam steps reach ~1e-9 here

# at pi*, beta h_ij = r_i - r_j: the loss is the cross-entropy of the preferences with themselves
loss_at_optimum = (prefer[I, J] * np.log1p(np.exp(-(reward[I] - reward[J])))).sum()
assert np.isclose(history[-1], loss_at_optimum, rtol=1e-9)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(history)
axes[0].axhline(loss_at_optimum, color="k", ls="--", lw=1, label="loss at $\\pi^*$")
axes[0].set_xlabel("Adam step")
axes[0].set_ylabel("expected DPO loss")
axes[0].legend()
xs = np.arange(K)
axes[1].bar(xs - 0.27, np.exp(ref_logp), 0.27, label="$\\pi_{ref}$")
axes[1].bar(xs, np.exp(optimum), 0.27, label="$\\pi^* \\propto \\pi_{ref} e^{r/\\beta}$")
axes[1].bar(xs + 0.27, np.exp(learned), 0.27, label="DPO")
axes[1].set_xlabel("response")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# ## PPO's clipped objective
#
# PPO reuses a batch of samples from $\pi_{\text{old}}$ for several gradient steps. With the ratio
# $\rho = \pi(a)/\pi_{\text{old}}(a) = e^{\log\pi - \log\pi_{\text{old}}}$ and advantage $A$, it minimizes
#
# $$\mathcal{L}_{\text{clip}} = \max\!\big(-A\rho,\; -A \operatorname{clip}(\rho, 1 - \epsilon, 1 + \epsilon)\big),
# \qquad \frac{\partial \mathcal{L}_{\text{clip}}}{\partial \log \pi} = \begin{cases} 0 & A > 0,\ \rho > 1+\epsilon \;\text{ or }\; A < 0,\ \rho < 1-\epsilon \\ -A\rho & \text{otherwise} \end{cases}$$
#
# Once the policy has moved the probability of an action far enough in the advantage's
# direction, that action stops contributing gradient: no incentive to move further. In the
# other direction the unclipped term keeps the full gradient (the max is pessimistic). In the
# pictures, $\partial (A\rho) / \partial \log\pi = A\rho$, so where nothing is clipped the gradient
# (dashed, from tinyllm's backward) lies on the objective itself.

# %%
eps = 0.2
log_ratio = np.linspace(-0.6, 0.6, 241)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for A, ax in ((1.0, axes[0]), (-1.0, axes[1])):
    lp = T(log_ratio, requires_grad=True)
    loss, stats = ppo_policy_loss(lp, np.zeros_like(log_ratio), np.full_like(log_ratio, A),
                                  np.ones_like(log_ratio), cliprange=eps)  # fmt: skip
    (loss * len(log_ratio)).backward()  # the masked mean over 241 tokens, undone: per token
    rho = np.exp(log_ratio)
    clipped = (A > 0) & (rho > 1 + eps) | (A < 0) & (rho < 1 - eps)
    assert np.allclose(lp.grad.numpy(), np.where(clipped, 0.0, -A * rho), rtol=0, atol=1e-12)
    per_token = np.maximum(-A * rho, -A * np.clip(rho, 1 - eps, 1 + eps))
    ax.plot(rho, -per_token, label="objective $-\\mathcal{L}_{clip}$")
    ax.plot(rho, -A * -rho, ls=":", label="unclipped $A\\rho$")
    ax.plot(
        rho,
        -lp.grad.numpy(),
        ls="--",
        label="$-\\partial\\mathcal{L}/\\partial\\log\\pi$ (backward)",
    )
    ax.axvspan(1 - eps, 1 + eps, color="0.9")
    ax.set_title(f"A = {A:+.0f}   (clip fraction {stats['clipfrac']:.2f})")
    ax.set_xlabel("ratio $\\rho$")
    ax.legend(fontsize=8)
plt.show()

away = T(np.array([-0.5, -0.1, 0.05, 0.15, 0.4]), requires_grad=True)  # no point on a kink
adv = np.array([1.0, -1.0, 2.0, -0.5, 1.0])
assert tinyllm.gradcheck(lambda lp: ppo_policy_loss(lp, np.zeros(5), adv, np.ones(5))[0], [away])
print("gradient zero exactly where the clip is active; gradcheck passed away from the kinks")

# %% [markdown]
# ## Generalized advantage estimation
#
# With rewards $r_t$, values $V_t$ and the TD residual $\delta_t = r_t + \gamma V_{t+1} - V_t$ ($V$ beyond
# the last response token is 0), GAE blends the $k$-step advantage estimates with weights $\lambda^k$:
#
# $$\hat A_t = \sum_{l \ge 0} (\gamma\lambda)^l\, \delta_{t+l} = \delta_t + \gamma\lambda\, \hat A_{t+1}, \qquad \hat R_t = \hat A_t + V_t .$$
#
# $\lambda = 0$ gives the one-step TD residual (low variance, biased by $V$); $\lambda = 1$ gives the
# Monte-Carlo return minus the value (unbiased, high variance). tinyllm computes the backward
# recursion, masked per row; below, the sum as written, by a double loop.

# %%
Bg, Tg, gamma = 3, 8, 0.9
rewards = rng.standard_normal((Bg, Tg))
values = rng.standard_normal((Bg, Tg))
valid = np.zeros((Bg, Tg))
for b, n in enumerate((8, 5, 2)):  # response lengths; the rest is padding
    valid[b, :n] = 1


def gae_naive(lam):
    adv = np.zeros((Bg, Tg))
    for b in range(Bg):
        n = int(valid[b].sum())
        v = np.append(values[b, :n], 0.0)  # V after the last token is 0
        delta = rewards[b, :n] + gamma * v[1:] - v[:-1]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** l * delta[t + l] for l in range(n - t))
    return adv


for lam in (0.0, 0.5, 0.95, 1.0):
    adv, returns = compute_gae(rewards, values, valid, gamma=gamma, lam=lam)
    assert np.allclose(adv, gae_naive(lam), rtol=0, atol=1e-12)
    assert np.allclose(returns, (adv + values) * valid, rtol=0, atol=1e-12)
adv1, _ = compute_gae(rewards, values, valid, gamma=gamma, lam=1.0)
discounted = np.zeros((Bg, Tg))  # the discounted return from t to the end of the response
for b in range(Bg):
    n = int(valid[b].sum())
    for t in range(n):
        discounted[b, t] = sum(gamma**k * rewards[b, t + k] for k in range(n - t))
assert np.allclose(adv1, (discounted - values) * valid, rtol=0, atol=1e-12)
print("GAE == the naive sum for lambda in {0, 0.5, 0.95, 1}; lambda = 1 is return - value")
