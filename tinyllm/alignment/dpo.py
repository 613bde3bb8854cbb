"""DPO, cDPO, IPO and hinge (TRL ``DPOTrainer``) on a tinyllm policy with a frozen reference.

The preference pairs are made once, before training, from the reference model's own samples
ranked by the checkable reward (``preferences.make_preferences``: chosen = a completion that
ends its sentence, rejected = one that does not). The reference log-probs of every pair are
computed once (TRL's ``precompute_ref_log_probs``). Each step takes ``batch_size`` pairs:

    logp_w, logp_l = sum of response-token log-probs under the policy
                     (per-token averages for ``loss_type="ipo"``, as TRL)
    losses, r_w, r_l = dpo_loss(logp_w, logp_l, ref_w, ref_l, beta, loss_type, label_smoothing)

Logged: loss, rewards/chosen, rewards/rejected, rewards/accuracies (r_w > r_l),
rewards/margins (TRL names).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tinyllm
from tinyllm.alignment.common import AlignConfig, AlignmentRun, alignment_tax
from tinyllm.alignment.losses import DPO_LOSS_TYPES, dpo_loss
from tinyllm.alignment.pipeline import build_batch, policy_logprobs
from tinyllm.alignment.preferences import make_preferences

__all__ = ["DPOConfig", "DPOTrainer", "pair_logps"]


@dataclass
class DPOConfig(AlignConfig):
    learning_rate: float = 1e-4
    batch_size: int = 32
    beta: float = 0.5  # KL to the reference 3.2-4.7 nats at step 40 (0.1: 7-9 nats)
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    num_pair_prompts: int = 512  # prompts sampled for the preference data
    samples_per_prompt: int = 4

    method = "dpo"

    def validate(self) -> None:
        super().validate()
        if self.loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {self.loss_type!r}")


def pair_logps(model, prompts, chosen, rejected, temperature=1.0, average=False):
    """(chosen logps [B], rejected logps [B]) from one forward over the 2B sequences."""
    batch = build_batch(list(prompts) + list(prompts), list(chosen) + list(rejected))
    per_token = policy_logprobs(model, batch, temperature)
    reduce = per_token.sum(dim=-1)
    if average:
        lengths = np.maximum(batch.label_mask.sum(axis=1), 1).astype(np.float64)
        reduce = reduce / tinyllm.tensor(lengths, dtype=reduce.dtype)
    B = len(prompts)
    return reduce[:B], reduce[B:]


class DPOTrainer:
    def __init__(
        self, config: DPOConfig, policy_lm, ref_model, task, base_config, echo=print
    ) -> None:
        config.validate()
        self.config, self.policy, self.ref_model, self.task = config, policy_lm, ref_model, task
        self.base_config, self.echo = base_config, echo
        self.opt = tinyllm.optim.AdamW(
            policy_lm.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.0
        )
        self.rng = np.random.default_rng(config.seed)

    def make_dataset(self) -> tuple[list, list, list]:
        cfg = self.config
        data = make_preferences(
            self.ref_model,
            self.task,
            cfg.num_pair_prompts,
            cfg.samples_per_prompt,
            cfg.max_new_tokens,
            self.rng,
            cfg.temperature,
        )
        return data.pairs(strict=True)

    def train(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        cfg = self.config
        run = AlignmentRun(cfg, self.policy, self.ref_model, self.task, self.base_config, self.echo)
        tax_before = alignment_tax(self.ref_model, self.base_config, cfg.tax_batches)
        prompts, chosen, rejected = self.make_dataset()
        n = len(prompts)
        if n == 0:
            raise ValueError(
                "dpo: no preference pairs: every prompt's samples got the same reward "
                "(raise --num-pair-prompts or --samples-per-prompt)"
            )
        average = cfg.loss_type == "ipo"
        with tinyllm.no_grad():
            ref_w, ref_l = [], []
            for s in range(0, n, 64):
                w, l = pair_logps(
                    self.ref_model,
                    prompts[s : s + 64],
                    chosen[s : s + 64],
                    rejected[s : s + 64],
                    cfg.temperature,
                    average,
                )
                ref_w.append(w.numpy())
                ref_l.append(l.numpy())
            ref_w, ref_l = np.concatenate(ref_w), np.concatenate(ref_l)
        write = self.echo
        write(
            f"dpo: {n} preference pairs from {cfg.num_pair_prompts} prompts "
            f"x {cfg.samples_per_prompt} reference samples"
        )
        bar = tqdm(
            range(cfg.steps),
            disable=not progress,
            desc=f"dpo ({cfg.loss_type})",
            unit="step",
            dynamic_ncols=True,
        )
        write = bar.write if progress else self.echo
        run.evaluate(0, write)
        order = self.rng.permutation(n)
        cursor = 0
        for step in bar:
            if cursor + cfg.batch_size > n:
                order, cursor = self.rng.permutation(n), 0
            rows = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
            pw, pl = pair_logps(
                self.policy,
                [prompts[i] for i in rows],
                [chosen[i] for i in rows],
                [rejected[i] for i in rows],
                cfg.temperature,
                average,
            )
            losses, rw, rl = dpo_loss(
                pw,
                pl,
                tinyllm.tensor(ref_w[rows]),
                tinyllm.tensor(ref_l[rows]),
                cfg.beta,
                cfg.loss_type,
                cfg.label_smoothing,
            )
            loss = losses.mean()
            self.opt.zero_grad()
            loss.backward()
            tinyllm.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.opt.step()
            rw, rl = rw.numpy(), rl.numpy()
            record = {
                "step": step + 1,
                "loss": loss.item(),
                "rewards/chosen": float(rw.mean()),
                "rewards/rejected": float(rl.mean()),
                "rewards/accuracies": float((rw > rl).mean()),
                "rewards/margins": float((rw - rl).mean()),
            }
            run.log(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['rewards/accuracies']:.2f}")
            if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.steps:
                run.evaluate(step + 1, write)
        bar.close()
        return {**run.finish(tax_before, {"pairs": n}), "run_dir": str(run.dir)}
