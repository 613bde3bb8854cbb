"""Advantages and KL coefficients: GAE, per-token rewards, group normalization, controllers.

All of these are constants of the losses (computed from a rollout, no graph), so they are
plain NumPy.

Per-token reward of PPO for language models (InstructGPT, TRL), response tokens t < n:
    r_t = -kl_coef * (log pi_old(a_t) - log pi_ref(a_t))  [+ score at the last token t = n - 1]

GAE (Schulman et al. 2016), values beyond the last response token are 0:
    delta_t = r_t + gamma V_{t+1} - V_t
    A_t = delta_t + gamma lambda A_{t+1}
    R_t = A_t + V_t                                  (returns, before whitening A)
  lambda = 1, gamma = 1:  A_t = sum_{k >= t} r_k - V_t   (returns minus values)
  lambda = 0:             A_t = delta_t                  (the TD residuals)

Group-normalized advantages (GRPO), rewards [P, G] for P prompts with G samples each:
    A_ij = (r_ij - mean_j r_ij) / (std_j r_ij + eps)
  with the unbiased (G - 1) standard deviation, as TRL's ``nanstd``. Then, for each group
  with distinct rewards, sum_j A_ij = 0 and sum_j A_ij^2 = G - 1 (exactly, as eps -> 0); a
  group whose rewards are all equal gets advantages 0.

Adaptive KL controller (Ziegler et al. 2019; TRL ``AdaptiveKLController``):
    e = clip(KL / target - 1, -0.2, 0.2);   beta <- beta (1 + e n_steps / horizon)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "compute_gae",
    "compute_token_rewards",
    "group_advantages",
]


def compute_token_rewards(
    scores: np.ndarray,
    logprobs: np.ndarray,
    ref_logprobs: np.ndarray,
    mask: np.ndarray,
    kl_coef: float,
    kl_estimator: str = "k1",
) -> tuple[np.ndarray, np.ndarray]:
    """(rewards [B, T], kl [B, T]): the KL penalty on every response token, score on the last.

    ``mask`` [B, T] marks response tokens (contiguous from column 0, right padding); the
    score of sequence b lands on exactly one position, its last response token.
    """
    m = np.asarray(mask, dtype=np.float64)
    logr = np.asarray(logprobs, np.float64) - np.asarray(ref_logprobs, np.float64)
    if kl_estimator == "k1":
        kl = logr
    elif kl_estimator == "k3":
        kl = np.expm1(-logr) + logr
    else:
        raise ValueError(
            f"compute_token_rewards: kl_estimator must be k1 or k3, got {kl_estimator}"
        )
    kl = kl * m
    rewards = -kl_coef * kl
    lengths = m.sum(axis=1).astype(np.int64)
    rows = np.nonzero(lengths > 0)[0]
    rewards[rows, lengths[rows] - 1] += np.asarray(scores, np.float64)[rows]
    return rewards, kl


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    mask: np.ndarray,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """(advantages [B, T], returns [B, T]) by GAE over the valid (mask 1) prefix of each row.

    Padding positions get advantage 0 and return 0; no value leaks in from them.
    """
    r = np.asarray(rewards, np.float64)
    v = np.asarray(values, np.float64)
    m = np.asarray(mask, np.float64)
    if not (r.shape == v.shape == m.shape) or r.ndim != 2:
        raise ValueError(
            f"compute_gae: rewards {r.shape}, values {v.shape}, mask {m.shape} must all be [B, T]"
        )
    B, T = r.shape
    advantages = np.zeros((B, T))
    last = np.zeros(B)
    for t in range(T - 1, -1, -1):
        next_values = v[:, t + 1] * m[:, t + 1] if t + 1 < T else np.zeros(B)
        delta = r[:, t] + gamma * next_values - v[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        advantages[:, t] = last
    returns = (advantages + v) * m
    return advantages, returns


def group_advantages(
    rewards: np.ndarray, num_generations: int, scale_rewards: str = "group", eps: float = 1e-4
) -> np.ndarray:
    """Advantages [P*G] from rewards [P*G] laid out prompt by prompt (G per prompt).

    ``scale_rewards``: "group" divides by each group's unbiased std (+ eps), "batch" by the
    batch's, "none" only centres (Dr. GRPO).
    """
    r = np.asarray(rewards, np.float64)
    G = num_generations
    if G < 2 or r.ndim != 1 or r.size % G:
        raise ValueError(
            f"group_advantages: need num_generations >= 2 dividing len(rewards); got G={G}, "
            f"{r.size} rewards"
        )
    groups = r.reshape(-1, G)
    centred = groups - groups.mean(axis=1, keepdims=True)
    if scale_rewards == "group":
        std = groups.std(axis=1, ddof=1, keepdims=True)
    elif scale_rewards == "batch":
        std = np.full_like(groups[:, :1], r.std(ddof=1))
    elif scale_rewards == "none":
        std = np.zeros_like(groups[:, :1]) + (1.0 - eps)
    else:
        raise ValueError("group_advantages: scale_rewards must be group, batch or none")
    return (centred / (std + eps)).reshape(-1)


class FixedKLController:
    """A constant KL coefficient (TRL ``FixedKLController``)."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Proportional control of the KL coefficient toward ``target`` (Ziegler et al. 2019)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current / self.target - 1, -0.2, 0.2))
        self.value *= 1 + proportional_error * n_steps / self.horizon
