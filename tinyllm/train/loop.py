"""The training loop behind ``tinyllm train``.

One step: ``grad_accum`` micro-batches of random windows, cross-entropy on next-token
prediction, backward, global-norm clipping, AdamW with linear warmup and cosine decay. Every
``log_interval`` steps a JSONL line (loss, lr, tokens/s, gradient norm); every
``eval_interval`` steps the validation loss in nats and bits per byte, compared with the
reference band; checkpoints at ``checkpoint_interval``, at the end, and on Ctrl-C.

A checkpoint holds the weights, the optimizer's moments, the step, and both random states
(the batch sampler's and tinyllm's global generator), so ``--resume`` continues exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm import backend
from tinyllm.data.batches import random_windows, sequential_windows
from tinyllm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinyllm.optim import AdamW
from tinyllm.optim.lr_scheduler import warmup_cosine
from tinyllm.train import band as reference_band
from tinyllm.train.config import TrainConfig
from tinyllm.train.tokens import TokenData, load_tokens

LN2 = math.log(2.0)
# configuration keys a checkpoint must share with the run that loads it (model shape and data)
CHECKPOINT_KEYS = (
    "arch", "d_model", "n_layer", "n_head", "n_kv_head", "seq_len", "ffn_hidden", "dropout",
    "tie_embeddings", "data", "tokenizer",
)  # fmt: skip


@dataclass
class RunResult:
    run_dir: Path
    step: int
    train_loss: float
    val_nats_per_byte: float | None
    val_bits_per_byte: float | None
    seconds: float
    interrupted: bool = False
    history: list = field(default_factory=list)
    sample: str = ""


def model_config_for(config: TrainConfig, vocab_size: int):
    from tinyllm.models import ModelConfig

    return ModelConfig(
        arch=config.arch, vocab_size=vocab_size, d_model=config.d_model, n_layer=config.n_layer,
        n_head=config.n_head, n_kv_head=config.n_kv_head, block_size=config.seq_len,
        ffn_hidden=config.ffn_hidden, dropout=config.dropout, tie_embeddings=config.tie_embeddings,
    )  # fmt: skip


def make_optimizer(model, config: TrainConfig) -> AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms' gains)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


def lm_loss(model, x: np.ndarray, y: np.ndarray, device: str):
    """Mean next-token cross-entropy (nats per token) of ``model`` on one batch."""
    logits = model(tinyllm.tensor(x, device=device))
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), tinyllm.tensor(y.reshape(-1), device=device))


def evaluate(model, data: TokenData, config: TrainConfig) -> tuple[float, float]:
    """(nats per byte, bits per byte) on a fixed slice of the validation split."""
    model.eval()
    total, count = 0.0, 0
    with tinyllm.no_grad():
        for x, y in sequential_windows(
            data.val, config.batch_size, config.seq_len, config.eval_batches
        ):
            total += lm_loss(model, x, y, config.device).item() * y.size
            count += y.size
    model.train()
    nats_per_token = total / max(count, 1)
    nats_per_byte = nats_per_token / data.val_bytes_per_token
    return nats_per_byte, nats_per_byte / LN2


# ---------------------------------------------------------------- checkpoints


def save_state(path: Path, model, opt: AdamW, step: int, batch_rng, config: TrainConfig) -> None:
    arrays = {f"model.{k}": backend.to_numpy(v.data) for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars = {}
    for index, entry in opt_state["state"].items():
        for name, value in entry.items():
            if hasattr(value, "shape"):
                arrays[f"optim.{index}.{name}"] = np.asarray(value)
            else:
                scalars[f"{index}.{name}"] = value
    metadata = {
        "format": "tinyllm-train-checkpoint-1",
        "step": step,
        "config": config.to_dict(),
        "optimizer_groups": opt_state["param_groups"],
        "optimizer_scalars": scalars,
        "batch_rng": batch_rng.bit_generator.state,
        "global_rng": backend.generator("cpu").bit_generator.state,
    }
    save_checkpoint(path, arrays, metadata)


def load_state(path: Path, model, opt: AdamW, config: TrainConfig):
    """Restore model, optimizer and random states; returns (step, batch_rng). Checks first."""
    arrays, meta = load_checkpoint(path)
    if meta.get("format") != "tinyllm-train-checkpoint-1":
        raise CheckpointError(f"{path}: not a tinyllm training checkpoint")
    saved = meta["config"]
    for key in CHECKPOINT_KEYS:
        if saved.get(key) != config.to_dict().get(key):
            raise CheckpointError(
                f"{path}: checkpoint was made with {key}={saved.get(key)!r}, "
                f"this run has {key}={config.to_dict().get(key)!r}"
            )
    model_state = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    state: dict = {}
    for key, value in arrays.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    try:
        model.load_state_dict(model_state)  # checks keys and shapes before writing
        opt.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: does not fit this model: {exc}") from exc
    batch_rng = np.random.default_rng()
    batch_rng.bit_generator.state = meta["batch_rng"]
    backend.generator("cpu").bit_generator.state = meta["global_rng"]
    return int(meta["step"]), batch_rng


# ---------------------------------------------------------------- the loop


def _write_jsonl(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (a resumed run rewrites them)."""
    if not path.exists():
        return
    keep = [
        line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in keep))


def train(
    config: TrainConfig, resume: bool = False, progress: bool = True, echo=print
) -> RunResult:
    """Run (or resume) training as configured; returns the final numbers."""
    from tqdm import tqdm

    from tinyllm.models import build_model

    config.validate()
    tinyllm.manual_seed(config.seed)
    data = load_tokens(config.data, config.tokenizer)
    model = build_model(model_config_for(config, data.vocab_size))
    if config.device != "cpu":
        model.to(config.device)
    opt = make_optimizer(model, config)
    schedule = warmup_cosine(config.warmup, config.steps, config.min_lr_ratio)
    batch_rng = np.random.default_rng(config.seed)

    run_dir = Path(config.out_dir) / config.run_name()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, ckpt_path = run_dir / "log.jsonl", run_dir / "checkpoint.safetensors"
    start = 0
    if resume:
        start, batch_rng = load_state(ckpt_path, model, opt, config)
        _truncate_log(log_path, start)
        echo(f"resumed {run_dir} at step {start}")
    else:
        if log_path.exists():
            log_path.unlink()
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    band = reference_band.load_band()
    use_band = reference_band.band_applies(band, config.to_dict())
    recorder = None
    if config.log_grads:
        from tinyllm.gradflow import GradFlowRecorder

        recorder = GradFlowRecorder(model)

    echo(
        f"{config.arch}: {model.num_parameters():,} parameters, vocab {data.vocab_size}, "
        f"{len(data.train):,} training tokens; run folder {run_dir}"
    )
    if not use_band:
        echo("no reference band for this configuration (the band covers the default run)")
    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum
    history: list[dict] = []
    val_nats = val_bits = None
    loss_value = float("nan")
    t_start = time.perf_counter()
    step = start
    interrupted = False
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
               desc="training", unit="step", dynamic_ncols=True)  # fmt: skip
    try:
        for step in bar:
            t0 = time.perf_counter()
            lr = config.lr * schedule(step)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_value = 0.0
            for _ in range(config.grad_accum):
                x, y = random_windows(data.train, config.batch_size, config.seq_len, batch_rng)
                loss = lm_loss(model, x, y, config.device)
                (loss / config.grad_accum if config.grad_accum > 1 else loss).backward()
                loss_value += loss.item() / config.grad_accum
            grad_norm = tinyllm.nn.utils.clip_grad_norm_(
                model.parameters(), config.grad_clip
            ).item()
            if recorder is not None:
                recorder.before_step()
            opt.step()
            opt.zero_grad()
            done = step + 1
            if recorder is not None:
                for record in recorder.after_step(done):
                    _write_jsonl(log_path, {"kind": "grad", **record})
            seconds = time.perf_counter() - t0
            bar.set_postfix(
                loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_step / seconds:,.0f}"
            )
            if done % config.log_interval == 0 or done == config.steps:
                record = {"step": done, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                          "tokens_per_s": tokens_per_step / seconds,
                          "elapsed_s": time.perf_counter() - t_start}  # fmt: skip
                _write_jsonl(log_path, record)
                history.append(record)
            if done % config.eval_interval == 0 or done == config.steps:
                val_nats, val_bits = evaluate(model, data, config)
                record = {
                    "step": done,
                    "val_nats_per_byte": val_nats,
                    "val_bits_per_byte": val_bits,
                }
                message = f"step {done}: train loss {loss_value:.4f}, val {val_bits:.4f} bits/byte"
                if use_band:
                    verdict = reference_band.check(band, done, val_bits)
                    record["band"] = verdict
                    message += f" — {verdict}"
                _write_jsonl(log_path, record)
                history.append(record)
                bar.write(message) if progress else echo(message)
            if done % config.checkpoint_interval == 0 and done != config.steps:
                save_state(ckpt_path, model, opt, done, batch_rng, config)
        step = config.steps
    except KeyboardInterrupt:
        interrupted = True
        echo(f"\ninterrupted: saving a checkpoint at step {step} to {ckpt_path}")
        save_state(ckpt_path, model, opt, step, batch_rng, config)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    result = RunResult(run_dir, step, loss_value, val_nats, val_bits, seconds, interrupted, history)
    if interrupted:
        return result
    save_state(ckpt_path, model, opt, step, batch_rng, config)
    from tinyllm.train.plots import plot_run

    plot_run(log_path, run_dir / "loss.png", band if use_band else None)
    if recorder is not None:
        from tinyllm.gradflow import plot_gradflow

        plot_gradflow(log_path, run_dir / "gradflow.png")
    result.sample = sample_after_training(model, data, config)
    return result


def sample_after_training(model, data: TokenData, config: TrainConfig) -> str:
    """A continuation of a prompt taken from the validation text (greedy-free, seeded)."""
    if config.sample_tokens <= 0:
        return ""
    text = data.val_text
    cut = text.find("\n\n", len(text) // 3)
    prompt = text[cut + 2 : cut + 2 + 60] if cut >= 0 else text[:60]
    ids = data.encode(prompt)
    out = model.generate(
        tinyllm.tensor(np.asarray([ids], dtype=np.int64), device=config.device),
        max_new_tokens=config.sample_tokens, temperature=0.8, top_k=50,
        generator=np.random.default_rng(config.seed),
    )  # fmt: skip
    return prompt + data.decode(backend.to_numpy(out.data)[0, len(ids) :].tolist())
