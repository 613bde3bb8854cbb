"""Fine-tune a small byte-level Llama on synthetic tool-use traces (supervised, masked loss).

Each step draws ``batch_size`` training tasks (``traces.sample_tasks``), renders each as a
ReAct trace or, with probability ``direct_fraction``, as a direct answer, pads the batch to its
longest example and minimises the mean next-token cross-entropy over the positions the model
writes (the prompt and the tools' observations are masked out, ``ignore_index``):

    L = sum_{b,t} m[b,t] * -log p(x[b,t+1] | x[b,:t+1]) / sum_{b,t} m[b,t]

The optimizer, schedule and clipping are ``tinyllm.train``'s: ``make_optimizer`` (AdamW,
weight decay on matrices only), ``warmup_cosine`` and ``clip_grad_norm_``.
The weights are saved with ``tinyllm.io.save_checkpoint`` (safetensors, no pickle).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.agents.toolkit import agent_registry
from tinyllm.agents.traces import EOS, VOCAB_SIZE, sample_tasks, training_example
from tinyllm.io.checkpoint import load_checkpoint, save_checkpoint

IGNORE = -100


@dataclass
class AgentTrainConfig:
    seed: int = 0
    steps: int = 1200
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    direct_fraction: float = 0.25
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    block_size: int = 512

    def model_config(self):
        from tinyllm.models import ModelConfig

        return ModelConfig(
            arch="llama",
            vocab_size=VOCAB_SIZE,
            d_model=self.d_model,
            n_layer=self.n_layer,
            n_head=self.n_head,
            block_size=self.block_size,
        )


def build_batch(
    examples: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs [B, T], targets [B, T]) padded to the longest example; untrained targets and
    padding are ``IGNORE``."""
    T = max(len(ids) for ids, _ in examples) - 1
    x = np.full((len(examples), T), EOS, dtype=np.int64)
    y = np.full((len(examples), T), IGNORE, dtype=np.int64)
    for b, (ids, trained) in enumerate(examples):
        n = len(ids) - 1
        x[b, :n] = ids[:-1]
        y[b, :n] = np.where(trained[1:], ids[1:], IGNORE)
    return x, y


def masked_lm_loss(model, x: np.ndarray, y: np.ndarray):
    """Mean cross-entropy over the trained target positions (``IGNORE`` elsewhere):
    ``tinyllm.train.loop.lm_loss`` with ``ignore_index=IGNORE``."""
    from tinyllm.train.loop import lm_loss

    return lm_loss(model, x, y, "cpu", ignore_index=IGNORE)


@dataclass
class FineTuneResult:
    model: object
    config: AgentTrainConfig
    losses: list[float]
    seconds: float


def finetune(
    config: AgentTrainConfig, progress: bool = True, echo=print, every: int = 50, on_step=None
) -> FineTuneResult:
    """Train a fresh model from ``config.seed``; returns it with the per-step losses.
    ``on_step(step, model)`` (optional) is called after each optimizer step."""
    from tqdm import tqdm

    from tinyllm.models import build_model
    from tinyllm.nn.utils import clip_grad_norm_
    from tinyllm.optim.lr_scheduler import warmup_cosine
    from tinyllm.train.loop import make_optimizer

    tinyllm.manual_seed(config.seed)
    model = build_model(config.model_config())
    model.train()
    opt = make_optimizer(model, config)
    schedule = warmup_cosine(config.warmup, config.steps, config.min_lr_ratio)
    registry = agent_registry()
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(config.steps), desc="fine-tune", unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = config.lr * schedule(step)
        tasks = sample_tasks(config.batch_size, rng)
        direct = rng.random(config.batch_size) < config.direct_fraction
        x, y = build_batch(
            [training_example(t, registry, bool(d)) for t, d in zip(tasks, direct, strict=True)]
        )
        loss = masked_lm_loss(model, x, y)
        loss.backward()
        clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(step + 1, model)
        if echo is not None and not progress and (step + 1) % every == 0:
            echo(f"step {step + 1}: loss {np.mean(losses[-every:]):.4f}")
    bar.close()
    model.eval()
    return FineTuneResult(model, config, losses, time.perf_counter() - t0)


def save_agent(
    path: str | Path, model, config: AgentTrainConfig, training: dict | None = None
) -> Path:
    """The weights and the training configuration (and an optional record of the training
    run, e.g. its seconds and final loss), as one safetensors file."""
    arrays = {k: backend.to_numpy(v.data) for k, v in model.state_dict().items()}
    meta = {"format": "tinyllm-agent-1", "config": asdict(config), "training": training or {}}
    return save_checkpoint(path, arrays, meta)


def load_agent(path: str | Path):
    """(model, config) saved by ``save_agent``."""
    from tinyllm.models import build_model

    arrays, meta = load_checkpoint(path)
    if meta.get("format") != "tinyllm-agent-1":
        raise ValueError(f"load_agent: {path} is not a tinyllm agent checkpoint")
    config = AgentTrainConfig(**meta["config"])
    model = build_model(config.model_config())
    model.load_state_dict(arrays)
    model.eval()
    return model, config
