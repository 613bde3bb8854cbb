"""Alignment and RL on tinyllm (roadmap section 8): reward models, PPO, DPO/IPO, GRPO.

Every loss is written with tinyllm ops, so autograd, ``tinyllm.gradcheck`` and the profiler
see it; names and signatures follow TRL where TRL has the concept.

- ``pipeline``: padding (prompts left, completions right), ``lm_forward`` with padding masks,
  ``sequence_logprobs(logits, labels, mask)``, KV-cache sampling of completions;
- ``losses``: ``dpo_loss`` (sigmoid / cDPO / robust / ipo / hinge), ``bradley_terry_loss``,
  ``plackett_luce_loss``, ``ppo_policy_loss``, ``ppo_value_loss``, ``grpo_loss``,
  ``kl_penalty`` (k1, k2, k3);
- ``advantages``: ``compute_gae``, per-token KL-penalized rewards, ``group_advantages``,
  fixed and adaptive KL controllers;
- ``models``: ``RewardModel`` (scalar head), ``CausalLMWithValueHead``;
- trainers: ``PPOTrainer``, ``DPOTrainer``, ``GRPOTrainer``, ``RewardTrainer`` and their
  configs; ``align(config)`` runs one from a ``tinyllm train`` run folder;
- ``tasks``: ``SentenceEndTask``, the checkable reward.
"""

from tinyllm.alignment.advantages import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    compute_token_rewards,
    group_advantages,
)
from tinyllm.alignment.losses import (
    bradley_terry_loss,
    dpo_loss,
    grpo_loss,
    kl_penalty,
    plackett_luce_loss,
    ppo_policy_loss,
    ppo_value_loss,
)
from tinyllm.alignment.models import CausalLMWithValueHead, RewardModel
from tinyllm.alignment.ops import masked_mean, masked_sum, masked_whiten
from tinyllm.alignment.pipeline import (
    CompletionBatch,
    build_batch,
    generate_completions,
    lm_forward,
    pad_sequences,
    sequence_logprobs,
)
from tinyllm.alignment.tasks import SentenceEndTask, sentence_end_reward

__all__ = [
    "AdaptiveKLController",
    "CausalLMWithValueHead",
    "CompletionBatch",
    "FixedKLController",
    "RewardModel",
    "SentenceEndTask",
    "bradley_terry_loss",
    "build_batch",
    "compute_gae",
    "compute_token_rewards",
    "dpo_loss",
    "generate_completions",
    "group_advantages",
    "grpo_loss",
    "kl_penalty",
    "lm_forward",
    "masked_mean",
    "masked_sum",
    "masked_whiten",
    "pad_sequences",
    "plackett_luce_loss",
    "ppo_policy_loss",
    "ppo_value_loss",
    "sentence_end_reward",
    "sequence_logprobs",
]
