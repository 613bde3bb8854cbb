"""Preference and policy-gradient losses, written with tinyllm ops (autograd sees them all).

Notation: log pi(y|x) = sum of the response tokens' log-probabilities (prompt and padding
masked), pi_ref the frozen reference, sigma the logistic function.

Bradley-Terry (reward models; TRL ``RewardTrainer``):
    P(y_w > y_l) = sigma(r_w - r_l)
    L = -log sigma(r_w - r_l - margin) [+ c * (r_w + r_l)^2 when centering]
    dL/dr_w = -sigma(r_l - r_w + margin) = -dL/dr_l

Plackett-Luce (K-way rankings, ListMLE), scores s in ranked order tau (best first):
    L = -sum_{k=1}^{K} [ s_tau(k) - log sum_{j>=k} exp(s_tau(j)) ]       (K = 2: Bradley-Terry)

DPO family (TRL ``DPOTrainer.dpo_loss``), with h = (log pi(y_w) - log pi_ref(y_w))
                                                - (log pi(y_l) - log pi_ref(y_l)):
    sigmoid: L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)   (eps > 0: cDPO)
    robust:  L = [-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps)
    ipo:     L = (h - 1 / (2 beta))^2                                    (beta plays tau)
    hinge:   L = max(0, 1 - beta h)
    implicit rewards: beta (log pi(y) - log pi_ref(y)), detached.
  At pi = pi_ref (h = 0) the sigmoid loss is ln 2 and dL/dlog pi(y_w) = -beta/2,
  dL/dlog pi(y_l) = +beta/2.

KL estimators per token, r = log pi_ref(a) - log pi(a) (samples a ~ pi; Schulman's k1..k3):
    k1 = -r = log pi - log pi_ref;   k2 = r^2 / 2;   k3 = exp(r) - r - 1 >= 0 (0 iff r = 0)

PPO (clipped surrogate, Schulman et al. 2017; TRL PPO), rho = exp(log pi - log pi_old):
    L_pg = masked_mean( max(-A rho, -A clip(rho, 1 - eps, 1 + eps)) )
    V_c  = V_old + clip(V - V_old, -eps_v, eps_v)
    L_v  = 0.5 masked_mean( max((V - R)^2, (V_c - R)^2) )
  Where the clip is active (A > 0 and rho > 1 + eps, or A < 0 and rho < 1 - eps) the max picks
  the clipped branch, whose gradient in rho is 0.

GRPO (DeepSeekMath; TRL ``GRPOTrainer``), per token:
    l_t = -min(rho A, clip(rho, 1 - eps, 1 + eps) A) + beta k3_t
    "grpo": mean over sequences of (1/|o_i|) sum_t l_t   (per-sequence token average)
    "bnpo": sum over all tokens / number of tokens        "dr_grpo": sum / (B * max_len)
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.alignment.ops import as_tensor, masked_mean, masked_sum
from tinyllm.tensor import Tensor

__all__ = [
    "DPO_LOSS_TYPES",
    "GRPO_LOSS_TYPES",
    "bradley_terry_loss",
    "dpo_loss",
    "grpo_loss",
    "kl_penalty",
    "plackett_luce_loss",
    "ppo_policy_loss",
    "ppo_value_loss",
]

DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    margin=None,
    center_rewards_coefficient: float | None = None,
) -> Tensor:
    """Mean of -log sigma(r_w - r_l - margin) over pairs (TRL ``RewardTrainer.compute_loss``).

    ``center_rewards_coefficient`` adds c * mean((r_w + r_l)^2), which pins the rewards'
    additive constant near 0 (Eisenstein et al. 2023).
    """
    if tuple(chosen_rewards.shape) != tuple(rejected_rewards.shape):
        raise ValueError(
            f"bradley_terry_loss: chosen {tuple(chosen_rewards.shape)} and rejected "
            f"{tuple(rejected_rewards.shape)} rewards must have the same shape"
        )
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - as_tensor(margin, like=diff)
    loss = -F.logsigmoid(diff).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    return loss


def plackett_luce_loss(scores: Tensor, ranking=None, reduction: str = "mean") -> Tensor:
    """-log P(ranking | scores) under Plackett-Luce for scores [B, K].

    ``ranking`` [B, K] (int) lists the indices of each row's items from best to worst; None
    means the columns are already in ranked order. ``reduction``: "mean", "sum" or "none".
    """
    if scores.ndim != 2:
        raise ValueError(f"plackett_luce_loss: scores must be [B, K], got {tuple(scores.shape)}")
    B, K = scores.shape
    if ranking is not None:
        order = np.asarray(ranking.data if isinstance(ranking, Tensor) else ranking, np.int64)
        if order.shape != (B, K) or not (np.sort(order, axis=1) == np.arange(K)).all():
            raise ValueError(
                f"plackett_luce_loss: ranking must be a permutation of 0..{K - 1} per row, "
                f"shape {(B, K)}"
            )
        scores = F.gather(scores, 1, as_tensor(order))  # [B, K] best first
    # suffix log-sum-exp: lse_k = log sum_{j >= k} exp(s_j), from an additive mask [K, K]
    suffix = np.where(np.arange(K)[None, :] >= np.arange(K)[:, None], 0.0, -np.inf)
    masked = scores.unsqueeze(1) + as_tensor(suffix, like=scores)  # [B, K, K]
    lse = F.logsumexp(masked, dim=-1)  # [B, K]
    losses = (lse - scores).sum(dim=-1)  # [B]
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    raise ValueError(f"plackett_luce_loss: reduction must be mean, sum or none, got {reduction!r}")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """(losses [B], chosen_rewards [B], rejected_rewards [B]) as TRL's ``dpo_loss``.

    Inputs are summed response log-probabilities [B] (for ``ipo`` TRL passes per-token
    averages; ``DPOTrainer`` does that). The reference log-probs are constants: they are
    detached here whatever the caller passed. The rewards are detached.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"dpo_loss: beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    ref_chosen = reference_chosen_logps.detach()
    ref_rejected = reference_rejected_logps.detach()
    chosen_logratios = policy_chosen_logps - ref_chosen
    rejected_logratios = policy_rejected_logps - ref_rejected
    h = chosen_logratios - rejected_logratios  # [B]
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h) * (1 - label_smoothing)
        if label_smoothing:
            losses = losses - F.logsigmoid(-beta * h) * label_smoothing
    elif loss_type == "robust":
        losses = (
            -F.logsigmoid(beta * h) * (1 - label_smoothing)
            + F.logsigmoid(-beta * h) * label_smoothing
        ) / (1 - 2 * label_smoothing)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:  # hinge
        losses = F.relu(1 - beta * h)
    chosen_rewards = (beta * chosen_logratios).detach()
    rejected_rewards = (beta * rejected_logratios).detach()
    return losses, chosen_rewards, rejected_rewards


def kl_penalty(logprob: Tensor, ref_logprob: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled tokens' log-probs (TRL names).

    ``kind``: "k1" (log pi - log pi_ref), "k2" (0.5 (log pi - log pi_ref)^2), "k3"
    (exp(r) - r - 1 with r = log pi_ref - log pi), "abs" (|log pi - log pi_ref|).
    """
    diff = logprob - ref_logprob
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff**2
    if kind == "k3":
        r = -diff
        return F.exp(r) - r - 1
    if kind == "abs":
        return F.abs(diff)
    raise ValueError(f"kl_penalty: kind must be k1, k2, k3 or abs, got {kind!r}")


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs, advantages, mask, cliprange: float = 0.2
) -> tuple[Tensor, dict]:
    """Clipped surrogate loss and its statistics (clip fraction, approx-KL) as floats."""
    old = as_tensor(old_logprobs, like=logprobs)
    adv = as_tensor(advantages, like=logprobs)
    ratio = F.exp(logprobs - old)
    pg_losses = -adv * ratio
    pg_losses2 = -adv * F.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(F.maximum(pg_losses, pg_losses2), mask)
    m = np.asarray(mask, dtype=np.float64)
    n = max(m.sum(), 1.0)
    d = np.asarray(logprobs.data - old.data, dtype=np.float64)
    stats = {
        "clipfrac": float(
            ((np.asarray(pg_losses2.data) > np.asarray(pg_losses.data)) * m).sum() / n
        ),
        "approxkl": float(0.5 * (d**2 * m).sum() / n),
        "ratio_mean": float((np.exp(d) * m).sum() / n),
    }
    return loss, stats


def ppo_value_loss(
    values: Tensor, old_values, returns, mask, cliprange_value: float = 0.2
) -> tuple[Tensor, dict]:
    """Clipped value loss 0.5 masked_mean(max((V - R)^2, (V_c - R)^2)) and its clip fraction."""
    old = as_tensor(old_values, like=values)
    ret = as_tensor(returns, like=values)
    clipped = old + F.clamp(values - old, -cliprange_value, cliprange_value)
    losses1 = (values - ret) ** 2
    losses2 = (clipped - ret) ** 2
    loss = 0.5 * masked_mean(F.maximum(losses1, losses2), mask)
    m = np.asarray(mask, dtype=np.float64)
    frac = float(
        ((np.asarray(losses2.data) > np.asarray(losses1.data)) * m).sum() / max(m.sum(), 1)
    )
    return loss, {"vf_clipfrac": frac}


def grpo_loss(
    logprobs: Tensor,
    old_logprobs,
    ref_logprobs,
    advantages,
    mask,
    beta: float = 0.04,
    epsilon: float = 0.2,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
) -> tuple[Tensor, dict]:
    """GRPO loss for per-token log-probs [B, T] and sequence advantages [B] (or [B, T]).

    Returns (loss, stats) with the mean k3 KL and the clip ratio as floats.
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(
            f"grpo_loss: loss_type must be one of {GRPO_LOSS_TYPES}, got {loss_type!r}"
        )
    m = np.asarray(mask, dtype=np.float64)
    adv = np.asarray(advantages, dtype=np.float64)
    if adv.ndim == 1:
        adv = adv[:, None] * np.ones_like(m)
    old = as_tensor(old_logprobs, like=logprobs)
    A = as_tensor(adv, like=logprobs)
    ratio = F.exp(logprobs - old)
    per_token = -F.minimum(ratio * A, F.clamp(ratio, 1 - epsilon, 1 + epsilon) * A)
    kl = None
    if beta:
        kl = kl_penalty(logprobs, as_tensor(ref_logprobs, like=logprobs), "k3")
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        lengths = np.maximum(m.sum(axis=1), 1.0)
        per_seq = masked_sum(per_token, m, dim=1) / as_tensor(lengths, like=logprobs)
        loss = per_seq.mean()
    elif loss_type == "bnpo":
        loss = masked_mean(per_token, m)
    else:
        denom = m.shape[0] * (max_completion_length or m.shape[1])
        loss = masked_sum(per_token, m) / float(denom)
    n = max(m.sum(), 1.0)
    clipped = (np.abs(np.asarray(ratio.data) - 1) > epsilon) * m
    stats = {"clip_ratio": float(clipped.sum() / n)}
    if kl is not None:
        stats["kl"] = float((np.asarray(kl.data) * m).sum() / n)
    return loss, stats
