"""``tinyllm train --objective mlm|prefixlm|span``: the training loop for the non-causal tasks.

The same optimization as the causal loop (``tinyllm.train.loop``: AdamW with weight decay on
matrices only, linear warmup + cosine decay, global-norm clipping, ``grad_accum``
micro-batches), the same checkpoint format and resume (the batch generator, which also draws
every mask, is saved), the same Ctrl-C handling (an unfinished step is rolled back) and the
same JSONL log, with one difference in what is measured: the loss is nats per labelled token
of the task (``tinyllm.objectives.tasks``), not per byte, and there is no reference band.
Every evaluation corrupts the validation windows with the same seeded generator, so the
validation curve measures the model, not a new draw of masks.

Models: a ``BidirectionalLM`` (mlm, prefixlm) or an ``EncoderDecoder`` (span) from
``tinyllm.models.encoder_decoder``, Llama's blocks at the run's d_model, n_layer (each of
encoder and decoder for span), n_head and ffn_hidden. ``tinyllm sample`` refuses these runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.data.batches import random_windows, sequential_windows
from tinyllm.objectives.tasks import make_task
from tinyllm.train.config import TrainConfig

__all__ = ["build_task_and_model", "evaluate_task", "train_objective", "validate_objective"]

# TrainConfig fields this loop does not implement (causal-model shape, mixed precision): an
# objective run refuses values other than their defaults rather than ignore them
_CLM_ONLY = ("n_kv_head", "tie_embeddings", "moe_experts", "precision",
             "loss_scale_growth_interval")  # fmt: skip


def validate_objective(config: TrainConfig) -> None:
    """Raise ValueError when a field does not apply to ``config.objective``."""
    if config.objective == "clm":
        return
    if config.arch != "llama":
        raise ValueError(
            f"objective {config.objective!r} trains its own Llama-style model (bidirectional or "
            f"encoder-decoder); arch must be the default 'llama', got {config.arch!r}"
        )
    from tinyllm.distributed.process_group import launched_world
    from tinyllm.train.config import DEFAULTS

    world = launched_world()  # from the launcher's environment; nothing is initialized
    if world is not None and world[1] != 1:
        raise ValueError(
            f"objective {config.objective!r} trains in one process: data parallelism "
            "(mpiexec -n N) is implemented for objective 'clm' only"
        )

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
    the first ``eval_batches`` batches), corrupted by a generator seeded with the run's seed."""
    rng = np.random.default_rng([config.seed, 1])
    total, count = 0.0, 0
    model.eval()
    with tinyllm.no_grad():
        for windows in sequential_windows(data.val, config.batch_size, task.raw_length - 1,
                                          config.eval_batches, drop_last=True):  # fmt: skip
            batch = task.make_batch(_rows(windows), rng)
            total += task.loss(model, batch, config.device, reduction="sum").item()
            count += batch.num_targets
    model.train()
    return total / max(count, 1), count


def _plot(log_path: Path, out_png: Path, what: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if train:
        ax.plot(*zip(*train), color="tab:blue", lw=1, label="train")
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (nats per {what})")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(log_path.parent.name)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


TARGET_NAMES = {"mlm": "masked token", "prefixlm": "continuation token", "span": "target token"}


def train_objective(config: TrainConfig, resume: bool = False, progress: bool = True,
                    echo=print):  # fmt: skip
    """Run (or resume) a non-causal objective's training; returns a ``RunResult`` whose
    ``train_loss`` and history are in nats per labelled token (``val_nats_per_byte`` and
    ``val_bits_per_byte`` are None: the per-token validation loss is in ``history``)."""
    from tqdm import tqdm

    from tinyllm.optim.lr_scheduler import warmup_cosine
    from tinyllm.train.loop import (
        RunResult,
        _read_log,
        _rollback_interrupted,
        _sigint_deferred,
        _step_values,
        _truncate_log,
        _write_jsonl,
        make_optimizer,
        restore_state,
        save_state,
    )
    from tinyllm.train.tokens import load_tokens

    config.validate()
    tinyllm.manual_seed(config.seed)
    data = load_tokens(config.data, config.tokenizer)
    task, model = build_task_and_model(config, data.vocab_size)
    if config.device != "cpu":
        model.to(config.device)
    opt = make_optimizer(model, config)
    schedule = warmup_cosine(config.warmup, config.steps, config.min_lr_ratio)
    batch_rng = np.random.default_rng(config.seed)
    run_dir = Path(config.out_dir) / config.run_name()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, ckpt_path = run_dir / "log.jsonl", run_dir / "checkpoint.safetensors"
    start, next_rng = 0, None
    if resume:
        start, batch_rng, next_rng = restore_state(ckpt_path, model, opt, config, echo=echo)
        _truncate_log(log_path, start)
        echo(f"resumed {run_dir} at step {start}")
    elif log_path.exists():
        log_path.unlink()
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    what = TARGET_NAMES[config.objective]
    echo(
        f"{config.objective}: {type(model).__name__}, {model.num_parameters():,} parameters, "
        f"vocab {task.vocab_size} ({data.vocab_size} data tokens + specials), rows of "
        f"{task.raw_length} tokens; loss in nats per {what}; run folder {run_dir}"
    )
    history: list[dict] = []
    loss_value = float("nan")
    t_start = time.perf_counter()

    def run_evaluation(done: int, write) -> float:
        value, count = evaluate_task(model, task, data, config)
        record = {"step": done, "val_loss": value, "val_targets": count,
                  "objective": config.objective}  # fmt: skip
        _write_jsonl(log_path, record)
        history.append(record)
        write(f"step {done}: train loss {loss_value:.4f}, val {value:.4f} nats per {what}")
        return value

    if resume and start > 0:  # as the causal loop: the resumed step's evaluation, read or rerun
        old = [r for r in _read_log(log_path) if r.get("step") == start and "val_loss" in r]
        if old:
            history.append(old[-1])
        elif start % config.eval_interval == 0 or start == config.steps:
            run_evaluation(start, echo)

    done, in_step, snapshot, interrupted = start, False, None, False
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
               desc=f"training ({config.objective})", unit="step", dynamic_ncols=True)  # fmt: skip
    try:
        for step in bar:
            if next_rng is None:
                next_rng = backend.get_rng_state()
            snapshot, in_step, next_rng = (batch_rng.bit_generator.state, next_rng), True, None
            t0 = time.perf_counter()
            lr = config.lr * schedule(step)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum = None
            targets = 0
            for _ in range(config.grad_accum):
                raw = _rows(random_windows(data.train, config.batch_size, task.raw_length - 1,
                                           batch_rng))  # fmt: skip
                batch = task.make_batch(raw, batch_rng)
                targets += batch.num_targets
                loss = task.loss(model, batch, config.device)
                (loss / config.grad_accum if config.grad_accum > 1 else loss).backward()
                part = loss.data.astype(np.float64) / config.grad_accum
                loss_sum = part if loss_sum is None else loss_sum + part
            norm = tinyllm.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            loss_value, grad_norm = _step_values(loss_sum, norm)
            with _sigint_deferred():
                opt.step()
                opt.zero_grad()
                done, in_step = step + 1, False
                seconds = time.perf_counter() - t0
                if done % config.log_interval == 0 or done == config.steps:
                    record = {"step": done, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                              "targets": targets, "targets_per_s": targets / seconds,
                              "elapsed_s": time.perf_counter() - t_start}  # fmt: skip
                    _write_jsonl(log_path, record)
                    history.append(record)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            if done % config.eval_interval == 0 or done == config.steps:
                run_evaluation(done, bar.write if progress else echo)
            if done % config.checkpoint_interval == 0 and done != config.steps:
                next_rng = backend.get_rng_state()
                save_state(ckpt_path, model, opt, done, batch_rng, config, next_rng)
    except KeyboardInterrupt:
        interrupted = True
        next_rng = _rollback_interrupted(in_step, snapshot, batch_rng, opt, next_rng)
        echo(f"\ninterrupted: saving a checkpoint at step {done} to {ckpt_path}")
        save_state(ckpt_path, model, opt, done, batch_rng, config, next_rng)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    result = RunResult(run_dir, done, loss_value, None, None, seconds, interrupted, history)
    if interrupted:
        return result
    save_state(ckpt_path, model, opt, done, batch_rng, config, backend.get_rng_state())
    _plot(log_path, run_dir / "loss.png", what)
    return result
