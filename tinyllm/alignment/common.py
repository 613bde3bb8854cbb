"""What every alignment trainer shares: the base run, the run folder, evaluation, the band.

A run of ``tinyllm align <method> RUN`` starts from the checkpoint of a ``tinyllm train`` run
(the policy and the frozen reference are two copies of it) and writes, like ``tinyllm train``,
a folder ``<out_dir>/<name>/`` holding ``align_config.json``, ``config.json`` (the base run's
model configuration, so that ``tinyllm sample`` reads the folder), ``log.jsonl`` (one JSON
line per step and per evaluation), ``checkpoint.safetensors`` (the aligned policy, loadable by
``tinyllm sample``), ``summary.json`` and ``reward_kl.png`` (reward and KL to the reference
over steps, the method's reference band behind the reward).

Evaluation, identical for every method, on held-out prompts (validation split):
    reward  = mean checkable reward of one sampled completion per prompt (temperature 1)
    KL      = mean over completions of sum_t (log pi(y_t) - log pi_ref(y_t))
              (the sequence-level k1 estimate of KL(pi || pi_ref) under samples from pi)
Alignment tax: validation bits/byte of the corpus's held-out text, before and after.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.alignment.pipeline import build_batch, generate_completions, policy_logprobs
from tinyllm.alignment.tasks import SentenceEndTask
from tinyllm.nn.module import eval_mode

__all__ = [
    "AlignConfig",
    "AlignmentRun",
    "BAND_KEYS",
    "alignment_tax",
    "band_keys",
    "band_verdict",
    "evaluate_policy",
    "load_band",
    "load_base",
    "plot_reward_kl",
]

LN2 = math.log(2.0)


@dataclass
class AlignConfig:
    """Fields shared by every method (each method's config adds its own)."""

    base_run: str = "runs/alignment_base"
    name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    steps: int = 40
    learning_rate: float = 1e-4
    max_grad_norm: float = 1.0
    # task
    prompt_bytes: int = 32
    max_new_tokens: int = 32  # also the task's max_bytes
    min_bytes: int = 8
    temperature: float = 1.0
    # evaluation
    eval_interval: int = 10
    eval_prompts: int = 64
    tax_batches: int = 8

    method = "base"

    def run_name(self) -> str:
        return self.name or f"align-{self.method}-s{self.seed}"

    def to_dict(self) -> dict:
        return {"method": self.method, **dataclasses.asdict(self)}

    def validate(self) -> None:
        for key in ("steps", "eval_interval", "eval_prompts", "max_new_tokens", "prompt_bytes"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def load_base(run_dir: str | Path):
    """(model, TrainConfig) of a ``tinyllm train`` run; the model in eval mode, no dropout."""
    from tinyllm.cli.sample_cmd import load_run

    model, config, _, _ = load_run(run_dir)
    if config.tokenizer:
        raise ValueError(
            f"{run_dir}: the alignment tasks are byte-level; this run uses a BPE tokenizer"
        )
    return model, config


def alignment_tax(model, train_config, batches: int) -> float:
    """Validation bits/byte of ``model`` on the first ``batches`` batches of held-out text."""
    from tinyllm.train.loop import evaluate
    from tinyllm.train.tokens import load_tokens

    data = load_tokens(train_config.data, train_config.tokenizer)
    config = dataclasses.replace(train_config, eval_batches=batches)
    with eval_mode(model):
        _, bits = evaluate(model, data, config)
    return bits


@tinyllm.no_grad()
def evaluate_policy(
    policy_lm,
    ref_lm,
    task: SentenceEndTask,
    prompts,
    rng,
    max_new_tokens: int,
    temperature: float = 1.0,
) -> dict:
    """Mean reward, mean sequence KL(pi || pi_ref) and mean length on one sample per prompt."""
    with eval_mode(policy_lm):
        completions = generate_completions(
            policy_lm, prompts, max_new_tokens, rng, temperature=temperature, stop=task.stop
        )
        rewards = task.rewards(completions)
        batch = build_batch(prompts, completions)
        logp = policy_logprobs(policy_lm, batch, temperature).numpy()
        ref = policy_logprobs(ref_lm, batch, temperature).numpy()
        kl = ((logp - ref) * batch.label_mask).sum(axis=1)
    return {
        "reward": float(rewards.mean()),
        "kl": float(kl.mean()),
        "length": float(batch.response_lengths.mean()),
        "sample": bytes(prompts[0] + completions[0]).decode("utf-8", errors="replace"),
    }


# ---------------------------------------------------------------- reference bands

# configuration keys that must match for a method's band to apply (seed and name may differ)
BAND_KEYS = (
    "method",
    "steps",
    "learning_rate",
    "prompt_bytes",
    "max_new_tokens",
    "min_bytes",
    "temperature",
    "eval_interval",
    "eval_prompts",
    "base_run",
)
# the settings that set each method's KL hold: a band only applies to runs that share them
METHOD_BAND_KEYS = {
    "ppo": ("kl_coef", "adaptive_kl", "target_kl", "kl_horizon", "reward_model"),
    "dpo": ("beta", "loss_type", "label_smoothing"),
    "grpo": ("beta", "loss_type"),
}


def band_keys(method: str) -> tuple[str, ...]:
    """The config keys a run must share with a method's band for the band to apply."""
    return BAND_KEYS + METHOD_BAND_KEYS.get(method, ())


def load_band(method: str) -> dict | None:
    try:
        text = resources.files("tinyllm.alignment").joinpath(f"bands/{method}.json").read_text()
    except (FileNotFoundError, OSError):
        return None
    return json.loads(text)


def band_applies(band: dict | None, config: dict) -> bool:
    if band is None:
        return False
    keys = band.get("keys", BAND_KEYS)
    return all(band["config"].get(k) == config.get(k) for k in keys)


def band_verdict(band: dict, step: int, reward: float) -> str:
    points = {int(s): (lo, hi) for s, lo, hi in zip(band["steps"], band["min"], band["max"])}
    if step not in points:
        return f"no reference point at step {step}"
    lo, hi = points[step]
    n = len(band["seeds"])
    if lo <= reward <= hi:
        return f"inside the reference band [{lo:.3f}, {hi:.3f}] ({n} seeds)"
    side = "BELOW" if reward < lo else "above"
    return f"{side} the reference band [{lo:.3f}, {hi:.3f}] ({n} seeds)"


# ---------------------------------------------------------------- the run folder


def plot_reward_kl(log_path: Path, out_png: Path, band: dict | None = None, title: str = ""):
    """Reward (left axis, band behind) and KL to the reference (right axis) over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if band is not None:
        ax.fill_between(
            band["steps"],
            band["min"],
            band["max"],
            color="tab:blue",
            alpha=0.2,
            label=f"reward band ({len(band['seeds'])} seeds)",
        )
    if evals:
        steps = [r["step"] for r in evals]
        ax.plot(
            steps,
            [r["reward"] for r in evals],
            "o-",
            color="tab:blue",
            ms=3,
            label="reward (held-out prompts)",
        )
        ax2 = ax.twinx()
        ax2.plot(
            steps,
            [r["kl"] for r in evals],
            "s--",
            color="tab:red",
            ms=3,
            label="KL(policy || reference), nats",
        )
        ax2.set_ylabel("KL to the reference (nats per completion)", color="tab:red")
        ax2.set_ylim(bottom=min(0.0, min(r["kl"] for r in evals)))
        ax2.legend(loc="lower right")
    ax.set_xlabel("step")
    ax.set_ylabel("checkable reward", color="tab:blue")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title or Path(log_path).parent.name)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


class OnlineTrainer:
    """The construction PPOTrainer and GRPOTrainer share: the validated config, the policy
    and the frozen reference, the task and its reward (``reward_fn(prompts, completions)``,
    default ``task.rewards(completions)``), AdamW over the policy's parameters (betas
    (0.9, 0.95), no weight decay, ``config.learning_rate``) and the run's generator
    (``config.seed``), which draws prompts, samples and mini-batch orders."""

    def __init__(self, config, policy, ref_model, task, base_config, reward_fn=None,
                 echo=print) -> None:  # fmt: skip
        config.validate()
        self.config, self.policy, self.ref_model, self.task = config, policy, ref_model, task
        self.base_config = base_config
        self.reward_fn = reward_fn or (lambda prompts, completions: task.rewards(completions))
        self.echo = echo
        self.opt = tinyllm.optim.AdamW(
            policy.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.0
        )
        self.rng = np.random.default_rng(config.seed)


class AlignmentRun:
    """Run folder bookkeeping: config, JSONL log, periodic evaluation, band, plot, summary."""

    def __init__(self, config: AlignConfig, policy_lm, ref_lm, task, base_config, echo=print):
        self.config, self.policy_lm, self.ref_lm = config, policy_lm, ref_lm
        self.task, self.base_config, self.echo = task, base_config, echo
        self.dir = Path(config.out_dir) / config.run_name()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "log.jsonl"
        if self.log_path.exists():
            self.log_path.unlink()
        (self.dir / "align_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        self.band = load_band(config.method)
        self.use_band = band_applies(self.band, config.to_dict())
        self.eval_prompts = task.eval_prompts(config.eval_prompts)
        self.history: list[dict] = []
        self.t_start = time.perf_counter()

    def log(self, record: dict) -> None:
        record = {**record, "elapsed_s": time.perf_counter() - self.t_start}
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.history.append(record)

    def evaluate(self, step: int, write=None) -> dict:
        rng = np.random.default_rng(10_000 + step)  # same draws at the same step, any method
        result = evaluate_policy(
            self.policy_lm,
            self.ref_lm,
            self.task,
            self.eval_prompts,
            rng,
            self.config.max_new_tokens,
            self.config.temperature,
        )
        record = {
            "kind": "eval",
            "step": step,
            "reward": result["reward"],
            "kl": result["kl"],
            "length": result["length"],
        }
        message = (
            f"step {step}: reward {result['reward']:.3f}, KL {result['kl']:.3f} nats, "
            f"length {result['length']:.1f} bytes"
        )
        if self.use_band:
            record["band"] = band_verdict(self.band, step, result["reward"])
            message += f" — {record['band']}"
        self.log(record)
        (write or self.echo)(message)
        result["message"] = message
        return result

    def finish(self, tax_before: float, extra: dict | None = None) -> dict:
        from tinyllm.io.checkpoint import save_checkpoint

        tax_after = alignment_tax(self.policy_lm, self.base_config, self.config.tax_batches)
        evals = [r for r in self.history if r.get("kind") == "eval"]
        arrays = {
            f"model.{k}": backend.to_numpy(v.data) for k, v in self.policy_lm.state_dict().items()
        }
        save_checkpoint(
            self.dir / "checkpoint.safetensors",
            arrays,
            {"format": "tinyllm-align-checkpoint-1", "config": self.config.to_dict()},
        )
        # a run folder `tinyllm sample` can read: config.json is the base run's model config
        base_cfg = Path(self.config.base_run) / "config.json"
        if base_cfg.is_file():
            shutil.copyfile(base_cfg, self.dir / "config.json")
        summary = {
            "method": self.config.method,
            "seed": self.config.seed,
            "steps": self.config.steps,
            "reward_before": evals[0]["reward"] if evals else None,
            "reward_after": evals[-1]["reward"] if evals else None,
            "kl_after": evals[-1]["kl"] if evals else None,
            "val_bits_per_byte_before": tax_before,
            "val_bits_per_byte_after": tax_after,
            "alignment_tax_bits_per_byte": tax_after - tax_before,
            "wall_s": time.perf_counter() - self.t_start,
            **(extra or {}),
        }
        self.log({"kind": "summary", **summary})
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_reward_kl(
            self.log_path,
            self.dir / "reward_kl.png",
            self.band if self.use_band else None,
            f"{self.config.method}: {self.dir.name}",
        )
        return summary
