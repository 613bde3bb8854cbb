"""GRPO (DeepSeekMath; TRL ``GRPOTrainer``): group-relative advantages, no value model.

One step: ``prompts_per_step`` prompts, ``num_generations`` (G) completions each from the
current policy; rewards r_ij; advantages A_ij = (r_ij - mean_j r) / (std_j r + 1e-4) (unbiased
std) shared by every token of completion ij; then ``num_iterations`` (mu) passes over the
batch minimizing

    l_t = -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps) A) + beta k3_t,
    k3_t = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1

averaged over each completion's tokens, then over completions (``loss_type="grpo"``).
With mu = 1, pi_old = pi (rho = 1, clipping inactive) and the update is the group-baselined
policy gradient plus the k3 penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tinyllm
from tinyllm.alignment.advantages import group_advantages
from tinyllm.alignment.common import AlignConfig, AlignmentRun, OnlineTrainer, alignment_tax
from tinyllm.alignment.losses import grpo_loss
from tinyllm.alignment.pipeline import build_batch, generate_completions, policy_logprobs

__all__ = ["GRPOConfig", "GRPOTrainer"]


@dataclass
class GRPOConfig(AlignConfig):
    learning_rate: float = 3e-4
    prompts_per_step: int = 8
    num_generations: int = 8
    num_iterations: int = 1
    beta: float = 0.3  # k3 KL coefficient: KL 2.6-3.1 nats at step 40 (0.04: 10-14 nats)
    epsilon: float = 0.2
    loss_type: str = "grpo"
    scale_rewards: str = "group"

    method = "grpo"

    def validate(self) -> None:
        super().validate()
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2, got {self.num_generations}")


class GRPOTrainer(OnlineTrainer):
    """``GRPOTrainer(config, policy_lm, ref_model, task, base_config)``: ``OnlineTrainer``'s
    construction (no value head, no KL controller); ``train()`` returns the run summary."""

    def __init__(
        self,
        config: GRPOConfig,
        policy_lm,
        ref_model,
        task,
        base_config,
        reward_fn=None,
        echo=print,
    ) -> None:
        super().__init__(config, policy_lm, ref_model, task, base_config, reward_fn, echo)

    @tinyllm.no_grad()
    def rollout(self) -> dict:
        cfg = self.config
        self.policy.eval()
        base = self.task.prompts(cfg.prompts_per_step, self.rng)
        prompts = [p for p in base for _ in range(cfg.num_generations)]  # G per prompt
        completions = generate_completions(
            self.policy, prompts, cfg.max_new_tokens, self.rng, cfg.temperature, stop=self.task.stop
        )
        rewards = np.asarray(self.reward_fn(prompts, completions), dtype=np.float64)
        advantages = group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)
        batch = build_batch(prompts, completions)
        old = batch.response_slice(policy_logprobs(self.policy, batch, cfg.temperature).numpy())
        ref = batch.response_slice(policy_logprobs(self.ref_model, batch, cfg.temperature).numpy())
        mask = batch.response_slice(batch.label_mask).astype(np.float64)
        self.policy.train()
        return {
            "batch": batch,
            "mask": mask,
            "old": old,
            "ref": ref,
            "rewards": rewards,
            "advantages": advantages,
        }

    def train(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        cfg = self.config
        run = AlignmentRun(cfg, self.policy, self.ref_model, self.task, self.base_config, self.echo)
        tax_before = alignment_tax(self.ref_model, self.base_config, cfg.tax_batches)
        bar = tqdm(
            range(cfg.steps), disable=not progress, desc="grpo", unit="step", dynamic_ncols=True
        )
        write = bar.write if progress else self.echo
        run.evaluate(0, write)
        for step in bar:
            ro = self.rollout()
            batch, P = ro["batch"], ro["batch"].prompt_length
            for _ in range(cfg.num_iterations):
                logp = policy_logprobs(self.policy, batch, cfg.temperature)[:, P - 1 :]
                loss, stats = grpo_loss(
                    logp,
                    ro["old"],
                    ro["ref"],
                    ro["advantages"],
                    ro["mask"],
                    cfg.beta,
                    cfg.epsilon,
                    cfg.loss_type,
                    cfg.max_new_tokens,
                )
                self.opt.zero_grad()
                loss.backward()
                tinyllm.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.opt.step()
            groups = ro["rewards"].reshape(-1, cfg.num_generations)
            record = {
                "step": step + 1,
                "reward": float(ro["rewards"].mean()),
                "reward_std": float(groups.std(axis=1, ddof=1).mean()),
                "frac_reward_zero_std": float((groups.std(axis=1) == 0).mean()),
                "loss": loss.item(),
                "completion_length": float(ro["mask"].sum(1).mean()),
                **stats,
            }
            run.log(record)
            bar.set_postfix(reward=f"{record['reward']:.2f}", kl=f"{stats.get('kl', 0):.3f}")
            if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.steps:
                run.evaluate(step + 1, write)
        bar.close()
        return {**run.finish(tax_before), "run_dir": str(run.dir)}
