"""``tinyllm train --objective mlm|prefixlm|span``: the non-causal objectives as tasks of the
training loop (``tinyllm.train.loop.train``, whose ``CausalLMTask`` describes the hooks).

The loop is the causal one: AdamW with weight decay on matrices only, linear warmup + cosine
decay, global-norm clipping, ``grad_accum`` micro-batches, ``--precision`` (bf16/fp16
autocast, fp16 loss scaling), data parallelism under ``mpiexec``, the same checkpoint format
and resume (the batch generator, which also draws every mask, is saved), the same Ctrl-C
handling (an unfinished step is rolled back) and the same JSONL log, with one difference in
what is measured: the loss is nats per labelled token of the task
(``tinyllm.objectives.tasks``), not per byte, and there is no reference band. Every
evaluation corrupts the validation windows with the same seeded generator, so the validation
curve measures the model, not a new draw of masks.

Models: a ``BidirectionalLM`` (mlm, prefixlm) or an ``EncoderDecoder`` (span) from
``tinyllm.models.encoder_decoder``, Llama's blocks at the run's d_model, n_layer (each of
encoder and decoder for span), n_head and ffn_hidden. ``tinyllm sample`` refuses these runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tinyllm
from tinyllm.data.batches import random_windows, sequential_windows
from tinyllm.objectives.tasks import Batch, make_task
from tinyllm.train.config import TrainConfig

__all__ = ["ObjectiveTask", "build_task_and_model", "evaluate_task", "validate_objective"]

# TrainConfig fields of the causal model's shape, which the objectives' models do not have: an
# objective run refuses values other than their defaults rather than ignore them
_CLM_ONLY = ("n_kv_head", "tie_embeddings", "moe_experts")


def validate_objective(config: TrainConfig) -> None:
    """Raise ValueError when a field does not apply to ``config.objective``."""
    if config.objective == "clm":
        return
    if config.arch != "llama":
        raise ValueError(
            f"objective {config.objective!r} trains its own Llama-style model (bidirectional or "
            f"encoder-decoder); arch must be the default 'llama', got {config.arch!r}"
        )
    from tinyllm.train.config import DEFAULTS

    for name in _CLM_ONLY:
        if hasattr(config, name) and getattr(config, name) != DEFAULTS[name]:
            raise ValueError(
                f"{name} applies to objective 'clm' only, got {name}={getattr(config, name)!r} "
                f"with objective {config.objective!r}"
            )


def build_task_and_model(config: TrainConfig, base_vocab: int):
    """(task, model) of a run: the objective's task and its freshly initialized model."""
    task = make_task(config.objective, base_vocab, config.seq_len)
    model_config = task.model_config(config.d_model, config.n_layer, config.n_head,
                                     config.ffn_hidden, config.dropout)  # fmt: skip
    return task, task.build_model(model_config)


def _rows(windows) -> np.ndarray:
    x, y = windows
    return np.concatenate([x, y[:, -1:]], axis=1)  # [B, L] consecutive raw tokens


def evaluate_task(model, task, data, config: TrainConfig) -> tuple[float, int]:
    """(mean nats per labelled token, labelled tokens) over the validation windows (all, or
    the first ``eval_batches`` batches), corrupted by a generator seeded with the run's seed,
    in the run's precision."""
    from tinyllm.amp.training import precision_context

    rng = np.random.default_rng([config.seed, 1])
    total, count = 0.0, 0
    model.eval()
    with tinyllm.no_grad(), precision_context(config.precision, config.device):
        for windows in sequential_windows(data.val, config.batch_size, task.raw_length - 1,
                                          config.eval_batches, drop_last=True):  # fmt: skip
            batch = task.make_batch(_rows(windows), rng)
            total += task.loss(model, batch, config.device, reduction="sum").item()
            count += batch.num_targets
    model.train()
    return total / max(count, 1), count


TARGET_NAMES = {"mlm": "masked token", "prefixlm": "continuation token", "span": "target token"}


def _shard_batch(batch: Batch, dp) -> Batch:
    """This rank's rows of every array of a global ``Batch`` (``DataParallel.shard``)."""
    names = list(batch.inputs)
    *inputs, labels = dp.shard(*(batch.inputs[k] for k in names), batch.labels)
    return Batch(dict(zip(names, inputs)), labels)


class ObjectiveTask:
    """A non-causal objective as a task of ``tinyllm.train.loop.train`` (its hooks are
    described at ``tinyllm.train.loop.CausalLMTask``): the objective's model and corrupted
    batches, the loss in nats per labelled token, the validation loss per labelled token.

    Data parallelism: every rank draws the global batch and its masks from the shared batch
    generator and keeps its rows; the ranks hold different numbers of labelled tokens, so a
    rank's loss is its summed loss x R / N (N: labelled tokens of the global batch, R ranks),
    whose average over the ranks (gradients and logged loss) is the global mean over N."""

    rate_label = "tgt_s"
    val_key = "val_loss"

    def __init__(self, config: TrainConfig) -> None:
        self.objective = config.objective
        self.what = TARGET_NAMES[config.objective]
        self.progress_desc = f"training ({config.objective})"
        self.task = None

    def build_model(self, config: TrainConfig, data):
        self.task, model = build_task_and_model(config, data.vocab_size)
        return model

    def start(self, model, data, config: TrainConfig, run_dir: Path) -> list[str]:
        return [
            f"{config.objective}: {type(model).__name__}, {model.num_parameters():,} parameters, "
            f"vocab {self.task.vocab_size} ({data.vocab_size} data tokens + specials), rows of "
            f"{self.task.raw_length} tokens; loss in nats per {self.what}; run folder {run_dir}"
        ]

    def batch(self, data, config: TrainConfig, rng: np.random.Generator, dp):
        rows = dp.global_batch_size(config.batch_size)
        raw = _rows(random_windows(data.train, rows, self.task.raw_length - 1, rng))
        batch = self.task.make_batch(raw, rng)
        count = batch.num_targets
        if dp.size > 1:
            return (_shard_batch(batch, dp), count, dp.size), count
        return (batch, count, 1), count

    def loss(self, model, item, config: TrainConfig):
        batch, count, ranks = item
        if ranks == 1:
            return self.task.loss(model, batch, config.device)
        summed = self.task.loss(model, batch, config.device, reduction="sum")
        return summed * (ranks / max(count, 1))

    def throughput(self, targets: int, seconds: float) -> dict:
        return {"targets": targets, "targets_per_s": targets / seconds}

    def evaluate(self, model, data, config: TrainConfig) -> tuple[dict, str]:
        value, count = evaluate_task(model, self.task, data, config)
        metrics = {"val_loss": value, "val_targets": count, "objective": config.objective}
        return metrics, f"val {value:.4f} nats per {self.what}"

    def band_verdict(self, step: int, metrics: dict) -> None:
        return None  # no reference band for these objectives

    def plot(self, log_path: Path, out_png: Path) -> None:
        from tinyllm.train.plots import plot_run

        plot_run(log_path, out_png, per=self.what)

    def sample(self, model, data, config: TrainConfig) -> str:
        return ""  # not a causal LM: nothing to sample
