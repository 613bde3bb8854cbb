"""One entry point for every method: ``align(config)`` loads the base run, builds the
policy, the frozen reference and the task, trains, and returns the run summary.

``tinyllm align`` and ``experiments/rlhf.py`` both call it.
"""

from __future__ import annotations

import numpy as np

import tinyllm
from tinyllm.alignment.common import AlignConfig, load_base
from tinyllm.alignment.dpo import DPOConfig, DPOTrainer
from tinyllm.alignment.grpo import GRPOConfig, GRPOTrainer
from tinyllm.alignment.models import CausalLMWithValueHead, RewardModel
from tinyllm.alignment.ppo import PPOConfig, PPOTrainer
from tinyllm.alignment.reward_trainer import RewardConfig, RewardTrainer, load_reward_model
from tinyllm.alignment.tasks import SentenceEndTask

__all__ = ["CONFIGS", "align"]

CONFIGS: dict[str, type[AlignConfig]] = {
    "ppo": PPOConfig,
    "dpo": DPOConfig,
    "grpo": GRPOConfig,
    "reward": RewardConfig,
}


def _reward_model_fn(rm: RewardModel):
    from tinyllm.alignment.pipeline import build_batch

    @tinyllm.no_grad()
    def score(prompts, completions):
        return rm.score_batch(build_batch(prompts, completions)).numpy().astype(np.float64)

    return score


def align(config: AlignConfig, progress: bool = True, echo=print, task=None) -> dict:
    """Run ``config.method`` from ``config.base_run``; returns the summary (and run folder).

    ``task`` (default: ``SentenceEndTask`` on the base run's corpus) supplies the prompts,
    the stop rule and the reward.
    """
    config.validate()
    tinyllm.manual_seed(config.seed)
    policy, base_config = load_base(config.base_run)
    ref, _ = load_base(config.base_run)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    policy.train()
    if task is None:
        task = SentenceEndTask.from_corpus(
            config.prompt_bytes, config.max_new_tokens, base_config.data, config.min_bytes
        )
    echo(
        f"{config.method}: base {config.base_run} ({policy.num_parameters():,} parameters), "
        f"task {task.name}: end a sentence after {task.min_bytes} to {task.max_bytes} bytes"
    )
    if config.method == "ppo":
        reward_fn = None
        if config.reward_model:
            rm = load_reward_model(config.reward_model, config.base_run)
            reward_fn = _reward_model_fn(rm)
            echo(
                f"ppo: optimizing the reward model {config.reward_model}; evaluation uses "
                "the checkable reward"
            )
        trainer = PPOTrainer(
            config,
            CausalLMWithValueHead(policy),
            ref,
            task,
            base_config,
            reward_fn=reward_fn,
            echo=echo,
        )
    elif config.method == "grpo":
        trainer = GRPOTrainer(config, policy, ref, task, base_config, echo=echo)
    elif config.method == "dpo":
        trainer = DPOTrainer(config, policy, ref, task, base_config, echo=echo)
    elif config.method == "reward":
        trainer = RewardTrainer(config, RewardModel(policy), ref, task, base_config, echo=echo)
    else:
        raise ValueError(f"unknown method {config.method!r}; known: {sorted(CONFIGS)}")
    return trainer.train(progress=progress)
