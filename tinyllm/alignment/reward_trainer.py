"""Reward-model training (TRL ``RewardTrainer``): Bradley-Terry on pairs or Plackett-Luce on
K-way rankings, from the reference model's samples ranked by the checkable reward.

    pairs:    L = -log sigma(r(x, y_w) - r(x, y_l))
    rankings: L = -sum_k [ r(x, y_tau(k)) - log sum_{j>=k} exp r(x, y_tau(j)) ]

Reported: training loss, and accuracy on held-out pairs (prompts from the validation split):
the fraction of pairs with r(x, y_w) > r(x, y_l). The run folder holds the reward model's
weights (``reward_model.safetensors``: trunk ``lm.*`` and ``score.*``), usable by
``tinyllm align ppo --reward-model``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.alignment.common import AlignConfig
from tinyllm.alignment.losses import bradley_terry_loss, plackett_luce_loss
from tinyllm.alignment.models import RewardModel
from tinyllm.alignment.pipeline import build_batch
from tinyllm.alignment.preferences import make_preferences

__all__ = ["RewardConfig", "RewardTrainer", "load_reward_model", "pair_accuracy"]


@dataclass
class RewardConfig(AlignConfig):
    learning_rate: float = 3e-4
    batch_size: int = 16
    loss: str = "bradley_terry"  # or "plackett_luce"
    num_pair_prompts: int = 384
    samples_per_prompt: int = 4
    eval_pair_prompts: int = 128
    center_rewards_coefficient: float | None = None

    method = "reward"


@tinyllm.no_grad()
def pair_accuracy(rm: RewardModel, prompts, chosen, rejected, batch: int = 64) -> float:
    """Fraction of pairs the reward model orders correctly."""
    rm.eval()
    right = 0
    for s in range(0, len(prompts), batch):
        p = prompts[s : s + batch]
        b = build_batch(p + p, chosen[s : s + batch] + rejected[s : s + batch])
        r = rm.score_batch(b).numpy()
        right += int((r[: len(p)] > r[len(p) :]).sum())
    rm.train()
    return right / max(len(prompts), 1)


def load_reward_model(run_dir: str | Path, base_run: str | Path | None = None) -> RewardModel:
    from tinyllm.alignment.common import load_base
    from tinyllm.io.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "align_config.json").read_text())
    lm, _ = load_base(base_run or cfg["base_run"])
    rm = RewardModel(lm)
    arrays, _ = load_checkpoint(run_dir / "reward_model.safetensors")
    rm.load_state_dict(arrays)
    rm.eval()
    return rm


class RewardTrainer:
    def __init__(
        self, config: RewardConfig, model: RewardModel, ref_model, task, base_config, echo=print
    ) -> None:
        config.validate()
        if config.loss not in ("bradley_terry", "plackett_luce"):
            raise ValueError(f"loss must be bradley_terry or plackett_luce, got {config.loss!r}")
        self.config, self.model, self.ref_model, self.task = config, model, ref_model, task
        self.base_config, self.echo = base_config, echo
        self.opt = tinyllm.optim.AdamW(
            model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.0
        )
        self.rng = np.random.default_rng(config.seed)

    def train(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        from tinyllm.alignment.common import plot_reward_kl  # noqa: F401  (same folder layout)
        from tinyllm.io.checkpoint import save_checkpoint

        cfg = self.config
        t0 = time.perf_counter()
        out = Path(cfg.out_dir) / cfg.run_name()
        out.mkdir(parents=True, exist_ok=True)
        (out / "align_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        log_path = out / "log.jsonl"
        log_path.unlink(missing_ok=True)

        def log(record):
            with log_path.open("a") as f:
                f.write(json.dumps({**record, "elapsed_s": time.perf_counter() - t0}) + "\n")

        K = cfg.samples_per_prompt
        train = make_preferences(
            self.ref_model,
            self.task,
            cfg.num_pair_prompts,
            K,
            cfg.max_new_tokens,
            self.rng,
            cfg.temperature,
        )
        held = make_preferences(
            self.ref_model,
            self.task,
            cfg.eval_pair_prompts,
            K,
            cfg.max_new_tokens,
            self.rng,
            cfg.temperature,
            split="eval",
        )
        tp, tc, tr = train.pairs()
        ep, ec, er = held.pairs()
        self.echo(f"reward: {len(tp)} training pairs, {len(ep)} held-out pairs ({cfg.loss}, K={K})")
        acc0 = pair_accuracy(self.model, ep, ec, er)
        log({"kind": "eval", "step": 0, "heldout_accuracy": acc0})
        bar = tqdm(
            range(cfg.steps),
            disable=not progress,
            desc=f"reward ({cfg.loss})",
            unit="step",
            dynamic_ncols=True,
        )
        write = bar.write if progress else self.echo
        write(f"step 0: held-out pair accuracy {acc0:.3f}")
        n_items = len(tp) if cfg.loss == "bradley_terry" else len(train.prompts)
        order, cursor, acc = self.rng.permutation(n_items), 0, acc0
        for step in bar:
            if cursor + cfg.batch_size > n_items:
                order, cursor = self.rng.permutation(n_items), 0
            rows = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
            if cfg.loss == "bradley_terry":
                p = [tp[i] for i in rows]
                b = build_batch(p + p, [tc[i] for i in rows] + [tr[i] for i in rows])
                r = self.model.score_batch(b)
                B = len(rows)
                loss = bradley_terry_loss(
                    r[:B], r[B:], center_rewards_coefficient=cfg.center_rewards_coefficient
                )
            else:
                p = [train.prompts[i] for i in rows for _ in range(K)]
                c = [train.completions[i][j] for i in rows for j in range(K)]
                r = self.model.score_batch(build_batch(p, c)).reshape(len(rows), K)
                loss = plackett_luce_loss(r, train.ranking[rows])
            self.opt.zero_grad()
            loss.backward()
            tinyllm.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.opt.step()
            log({"step": step + 1, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.steps:
                acc = pair_accuracy(self.model, ep, ec, er)
                log({"kind": "eval", "step": step + 1, "heldout_accuracy": acc})
                write(f"step {step + 1}: loss {loss.item():.4f}, held-out pair accuracy {acc:.3f}")
        bar.close()
        arrays = {k: backend.to_numpy(v.data) for k, v in self.model.state_dict().items()}
        save_checkpoint(
            out / "reward_model.safetensors",
            arrays,
            {"format": "tinyllm-reward-model-1", "config": cfg.to_dict()},
        )
        summary = {
            "method": "reward",
            "loss": cfg.loss,
            "train_pairs": len(tp),
            "heldout_pairs": len(ep),
            "heldout_accuracy_before": acc0,
            "heldout_accuracy_after": acc,
            "wall_s": time.perf_counter() - t0,
            "run_dir": str(out),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self._plot(log_path, out / "accuracy.png")
        return summary

    @staticmethod
    def _plot(log_path: Path, png: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = [json.loads(x) for x in log_path.read_text().splitlines() if x]
        losses = [(r["step"], r["loss"]) for r in recs if "loss" in r]
        accs = [(r["step"], r["heldout_accuracy"]) for r in recs if "heldout_accuracy" in r]
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
        if losses:
            ax.plot(*zip(*losses), color="tab:blue", lw=1, label="training loss")
        ax2 = ax.twinx()
        ax2.plot(*zip(*accs), "o-", color="tab:green", ms=3, label="held-out pair accuracy")
        ax2.set_ylim(0, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats)")
        ax2.set_ylabel("accuracy")
        ax.legend(loc="upper left")
        ax2.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png)
        plt.close(fig)
