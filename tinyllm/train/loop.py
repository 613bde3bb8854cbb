"""The training loop behind ``tinyllm train``.

One step: ``grad_accum`` micro-batches of random windows, cross-entropy on next-token
prediction, backward, global-norm clipping, AdamW with linear warmup and cosine decay. Every
``log_interval`` steps a JSONL line (loss, lr, tokens/s, gradient norm); every
``eval_interval`` steps the validation loss in nats and bits per byte over the whole
validation split (or its first ``eval_batches`` batches), compared with the reference band;
checkpoints at ``checkpoint_interval``, at the end, and on Ctrl-C.

``arch`` is "llama", "gpt" (``models.ModelConfig``) or "mamba" (``models.MambaConfig``).

A checkpoint holds the weights, the optimizer's moments, the step, and the random states (the
batch sampler's and tinyllm's global generators, ``backend.get_rng_state``: NumPy's state and
the device stream's (seed, epoch)), so ``--resume`` continues exactly as the uninterrupted run
would have, on the CPU and on a GPU. Every step starts a new device epoch, so a step's device
random numbers depend only on the step's starting state, which a checkpoint can restore.
Ctrl-C saves the number of completed optimizer steps: a step cut short is rolled back to its
starting random states, and Ctrl-C during an update is held until the update and its log line
are done.

Host syncs: the micro-batch losses are summed on the device and read back once per step,
together with the gradient norm (one transfer per step, whatever ``grad_accum``).

The loop is the same for every objective; what differs (the model, the batches, the loss,
the evaluation, the plot and the sample) is a task: ``CausalLMTask`` (objective "clm",
described above) or ``tinyllm.objectives.trainer.ObjectiveTask`` (mlm, prefixlm, span),
chosen by ``task_for``; ``CausalLMTask``'s docstring lists the hooks.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm import backend
from tinyllm.amp.training import make_grad_scaler, precision_context
from tinyllm.data.batches import random_windows, sequential_windows
from tinyllm.distributed import DataParallel, init_process_group
from tinyllm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinyllm.nn.moe.layer import moe_aux_loss, moe_modules
from tinyllm.optim import AdamW
from tinyllm.optim.lr_scheduler import warmup_cosine
from tinyllm.train import band as reference_band
from tinyllm.train.config import TrainConfig, saved_value
from tinyllm.train.tokens import TokenData, load_tokens

LN2 = math.log(2.0)
# configuration keys a checkpoint must share with the run that loads it (model shape and data)
# (a key an older checkpoint lacks means the field's default: such runs predate the field)
CHECKPOINT_KEYS = (
    "arch", "d_model", "n_layer", "n_head", "n_kv_head", "seq_len", "ffn_hidden", "dropout",
    "tie_embeddings", "data", "tokenizer", "d_state", "d_conv", "expand", "objective",
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
    is_main: bool = True  # False on data-parallel ranks other than 0 (no logs, no eval)


def model_config_for(config: TrainConfig, vocab_size: int):
    """The model configuration of a run: a ``MambaConfig`` for arch "mamba" (tied embeddings
    unless ``tie_embeddings`` is False; no context limit), else a ``ModelConfig``."""
    if config.objective != "clm":  # tinyllm.objectives.trainer builds those models
        raise ValueError(
            f"the run was trained with objective {config.objective!r}: it is not a causal "
            "language model, so it has no next-token model to sample from or quantize"
        )
    from tinyllm.models import MambaConfig, ModelConfig, RWKVConfig

    if config.arch == "rwkv":  # RWKV-4: channel-mix hidden ffn_hidden (default 4 d_model)
        return RWKVConfig(
            vocab_size=vocab_size, d_model=config.d_model, n_layer=config.n_layer,
            ffn_hidden=config.ffn_hidden, tie_embeddings=config.tie_embeddings is True,
        )  # fmt: skip
    if config.arch == "mamba":
        return MambaConfig(
            vocab_size=vocab_size, d_model=config.d_model, n_layer=config.n_layer,
            d_state=config.d_state, d_conv=config.d_conv, expand=config.expand,
            tie_embeddings=config.tie_embeddings is not False,
        )  # fmt: skip
    return ModelConfig(
        arch=config.arch, vocab_size=vocab_size, d_model=config.d_model, n_layer=config.n_layer,
        n_head=config.n_head, n_kv_head=config.n_kv_head, block_size=config.seq_len,
        ffn_hidden=config.ffn_hidden, dropout=config.dropout, tie_embeddings=config.tie_embeddings,
        **({"moe": config.moe_kwargs()} if config.moe_experts else {}),
    )  # fmt: skip


def make_optimizer(model, config: TrainConfig) -> AdamW:
    """AdamW with weight decay on matrices only: not on biases and norms' gains (ndim < 2),
    nor on the parameters a model names in ``no_weight_decay()`` (Mamba's A_log and D)."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and name not in skip else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


def lm_loss(model, x: np.ndarray, y: np.ndarray, device: str, ignore_index: int = -100):
    """Mean next-token cross-entropy (nats per token) of ``model`` on one batch; targets equal
    to ``ignore_index`` count neither in the sum nor in the mean (PyTorch's
    ``cross_entropy`` semantics: the mean is over the other targets)."""
    logits = model(tinyllm.tensor(x, device=device))
    B, T, V = logits.shape
    return F.cross_entropy(
        logits.reshape(B * T, V),
        tinyllm.tensor(y.reshape(-1), device=device),
        ignore_index=ignore_index,
    )


def _validation_batches(data: TokenData, config: TrainConfig):
    """The evaluation batches: every non-overlapping window of the validation split and its
    short tail (``eval_batches=None``), or the first ``eval_batches`` batches of full windows."""
    whole = config.eval_batches is None
    return sequential_windows(
        data.val, config.batch_size, config.seq_len, config.eval_batches, drop_last=not whole
    )


def evaluation_plan(data: TokenData, config: TrainConfig) -> dict:
    """What ``evaluate`` measures: batches, windows, target tokens and the bytes they cover."""
    batches = windows = tokens = 0
    for _, y in _validation_batches(data, config):
        batches, windows, tokens = batches + 1, windows + y.shape[0], tokens + y.size
    return {
        "whole_split": config.eval_batches is None,
        "batches": batches,
        "windows": windows,
        "tokens": tokens,
        "bytes": round(tokens * data.val_bytes_per_token),
        "split_tokens": len(data.val),
        "split_bytes": round(len(data.val) * data.val_bytes_per_token),
    }


def describe_evaluation(plan: dict) -> str:
    """One line for the log: what each evaluation covers."""
    what = "the whole validation split" if plan["whole_split"] else (
        f"the first {plan['batches']} batches of the validation split"
    )  # fmt: skip
    return (
        f"evaluation: {what}, {plan['tokens']:,} of {plan['split_tokens']:,} tokens as targets "
        f"(about {plan['bytes']:,} of {plan['split_bytes']:,} bytes) in {plan['windows']} "
        f"windows, {plan['batches']} batches"
    )


def evaluate(model, data: TokenData, config: TrainConfig) -> tuple[float, float]:
    """(nats per byte, bits per byte) on the validation split (all of it by default).

    nats/byte = (sum of -log p(target) over the evaluated targets) / (number of targets)
                / (bytes per validation token);  bits/byte = nats/byte / ln 2
    """
    model.eval()
    total, count = 0.0, 0
    with tinyllm.no_grad(), precision_context(config.precision, config.device):
        for x, y in _validation_batches(data, config):
            total += lm_loss(model, x, y, config.device).item() * y.size
            count += y.size
    model.train()
    nats_per_token = total / max(count, 1)
    nats_per_byte = nats_per_token / data.val_bytes_per_token
    return nats_per_byte, nats_per_byte / LN2


# ---------------------------------------------------------------- checkpoints


def save_state(
    path: Path,
    model,
    opt: AdamW,
    step: int,
    batch_rng,
    config: TrainConfig,
    rng_state: dict,
    scaler=None,
    world_size: int = 1,
) -> None:
    """Write a training checkpoint; ``rng_state`` is ``backend.get_rng_state()`` of the point
    the next step starts from (``global_rng``, NumPy's part alone, is kept for older readers)."""
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
        "global_rng": rng_state["cpu"],
        "rng_state": rng_state,
        "world_size": world_size,
    }
    if hasattr(getattr(model, "config", None), "to_dict"):  # e.g. rope_scaling, for the loader
        metadata["model_config"] = model.config.to_dict()
    if scaler is not None and scaler.is_enabled():  # fp16: the loss scale and its tracker
        metadata["grad_scaler"] = scaler.state_dict()
    save_checkpoint(path, arrays, metadata)


def load_state(path: Path, model, opt: AdamW, config: TrainConfig, echo=None):
    """Restore model, optimizer and random states; returns (step, batch_rng). Checks first.

    See ``restore_state``, which also returns the restored global random state."""
    step, batch_rng, _ = restore_state(path, model, opt, config, echo)
    return step, batch_rng


def restore_state(
    path: Path, model, opt: AdamW, config: TrainConfig, echo=None, scaler=None, world_size=1
):
    """Restore model, optimizer and random states; returns (step, batch_rng, rng_state), where
    ``rng_state`` is the ``backend.get_rng_state()`` the checkpoint's next step starts from
    (None for an older checkpoint). Checks first.

    The global random state: ``backend.set_rng_state`` of the saved ``rng_state``; a
    checkpoint from before it was saved has NumPy's state only (``global_rng``), which is
    restored as it was then (the device stream is left as it is).

    The evaluation setting may differ from the checkpoint's (``eval_batches``: an older run
    evaluated a slice of the validation split); ``echo`` is then told that validation losses
    before and after the resumed step measure different text.

    ``world_size``: the data-parallel ranks resuming it; the checkpoint's must be the same
    (each step draws ``world_size * batch_size`` rows, so another count changes the batches)."""
    arrays, meta = load_checkpoint(path)
    if meta.get("format") != "tinyllm-train-checkpoint-1":
        raise CheckpointError(f"{path}: not a tinyllm training checkpoint")
    if meta.get("world_size", 1) != world_size:
        raise CheckpointError(
            f"{path}: checkpoint was made by {meta.get('world_size', 1)} data-parallel "
            f"rank(s), this run has {world_size}: the global batch would change"
        )
    saved, ours = meta["config"], config.to_dict()
    for key in CHECKPOINT_KEYS:
        if saved_value(saved, key) != ours.get(key):
            raise CheckpointError(
                f"{path}: checkpoint was made with {key}={saved_value(saved, key)!r}, "
                f"this run has {key}={ours.get(key)!r}"
            )
    if echo is not None and saved.get("eval_batches") != config.eval_batches:
        echo(
            "note: the checkpoint's run evaluated with "
            f"eval_batches={saved.get('eval_batches')!r}, "
            f"this run with eval_batches={config.eval_batches!r} (None: the whole validation "
            f"split): validation losses before and after step {meta.get('step')} are not "
            "comparable"
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
    if scaler is not None and scaler.is_enabled() and "grad_scaler" in meta:
        scaler.load_state_dict(meta["grad_scaler"])  # an fp16 run resumes at its scale
    batch_rng = np.random.default_rng()
    batch_rng.bit_generator.state = meta["batch_rng"]
    rng_state = meta.get("rng_state")
    if rng_state is not None:
        backend.set_rng_state(rng_state)
    else:  # a checkpoint written before the device state was saved
        backend.generator("cpu").bit_generator.state = meta["global_rng"]
    return int(meta["step"]), batch_rng, rng_state


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


@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, so that an optimizer step and the log line
    of that step happen together or not at all (a parameter update cut in half could not be
    resumed). Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def _set_random_states(batch_rng: np.random.Generator, states: tuple[dict, dict]) -> None:
    """Back to a step's starting point: the batch sampler's state and ``get_rng_state()``'s."""
    batch_rng.bit_generator.state = states[0]
    backend.set_rng_state(states[1])


def _rollback_interrupted(in_step: bool, snapshot, batch_rng, opt, next_rng):
    """After Ctrl-C: the ``get_rng_state()`` the checkpoint's next step starts from. A step
    that was under way is rolled back (random states reset, gradients dropped), so its
    batches are drawn again on resume."""
    if in_step:
        _set_random_states(batch_rng, snapshot)
        opt.zero_grad()
        return snapshot[1]
    return backend.get_rng_state() if next_rng is None else next_rng


def _step_values(loss_sum, grad_norm) -> tuple[float, float]:
    """(train loss, gradient norm) as Python floats, read from the device in one transfer.

    ``loss_sum`` is the float64 sum of the micro-batch losses / grad_accum (added in the
    order they were computed, as Python floats were before), ``grad_norm`` the norm from
    ``clip_grad_norm_``; float32 -> float64 is exact, so the values equal ``.item()``'s."""
    xp = backend.get_array_module(loss_sum)
    both = backend.to_numpy(xp.stack([loss_sum, grad_norm.data.astype(xp.float64)]))
    return float(both[0]), float(both[1])


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class CausalLMTask:
    """The default task of ``train``: next-token prediction with a causal model (``arch``),
    losses in nats per token, validation in bits per byte against the reference band.

    A task is what ``train`` asks of a training objective; the loop owns everything else
    (optimizer, schedule, mixed precision, data parallelism, checkpoints, resume, Ctrl-C,
    the JSONL log). Its hooks, in the order the loop calls them:

    - ``build_model(config, data)``: the freshly initialized model (after ``manual_seed``);
    - ``start(model, data, config, run_dir)``: loads what the task needs, returns the lines
      to print before the first step;
    - ``batch(data, config, rng, dp)``: one micro-batch, every random choice from ``rng``
      (the checkpointed batch generator), drawn for the global batch and sharded to this
      rank; returns (batch, labelled targets in the global micro-batch);
    - ``loss(model, batch, config)``: the scalar this rank backpropagates; its mean over the
      ranks is the global micro-batch's loss (what the log records);
    - ``throughput(targets, seconds)``: the log line's rate fields for one step;
    - ``evaluate(model, data, config)``: (metrics for the log record, text for the console);
      ``val_key`` names the metric that marks an evaluation record in the log;
    - ``band_verdict(step, metrics)``: a comparison with a reference, or None;
    - ``plot(log_path, out_png)`` and ``sample(model, data, config)`` after the last step.
    """

    progress_desc = "training"
    rate_label = "tok_s"
    val_key = "val_bits_per_byte"

    def __init__(self) -> None:
        self.band, self.use_band = None, False

    def build_model(self, config: TrainConfig, data: TokenData):
        from tinyllm.models import build_model

        return build_model(model_config_for(config, data.vocab_size))

    def start(self, model, data: TokenData, config: TrainConfig, run_dir: Path) -> list[str]:
        band_key = reference_band.band_key(config.to_dict())  # an MoE run: never the dense band
        self.band = reference_band.load_band(band_key)
        mismatched = reference_band.band_mismatches(self.band, config.to_dict())  # MoE too
        self.use_band = self.band is not None and not mismatched
        lines = [
            f"{config.arch}: {model.num_parameters():,} parameters, vocab {data.vocab_size}, "
            f"{len(data.train):,} training tokens; run folder {run_dir}",
            describe_evaluation(evaluation_plan(data, config)),
        ]
        if self.band is None:
            lines.append(
                f"no reference band for arch {band_key!r} (measure one with: python "
                f"experiments/reference_band.py --arch {config.arch}"
                + (
                    f" --moe-experts {config.moe_experts} --moe-top-k {config.moe_top_k})"
                    if config.moe_experts
                    else ")"
                )
            )
        elif not self.use_band:
            why = ", ".join(mismatched[:3]) + (", ..." if len(mismatched) > 3 else "")
            lines.append(
                "no reference band for this configuration (the band covers the default run"
                + (f"; this run differs in {why})" if why else ")")
            )
        return lines

    def batch(self, data: TokenData, config: TrainConfig, rng: np.random.Generator, dp):
        # every rank draws the global batch and keeps its rows (one process: all)
        rows = dp.global_batch_size(config.batch_size)
        x, y = dp.shard(*random_windows(data.train, rows, config.seq_len, rng))
        return (x, y), rows * config.seq_len

    def loss(self, model, batch, config: TrainConfig):
        x, y = batch
        return lm_loss(model, x, y, config.device)

    def throughput(self, targets: int, seconds: float) -> dict:
        return {"tokens_per_s": targets / seconds}

    def evaluate(self, model, data: TokenData, config: TrainConfig) -> tuple[dict, str]:
        val_nats, val_bits = evaluate(model, data, config)
        metrics = {"val_nats_per_byte": val_nats, "val_bits_per_byte": val_bits}
        return metrics, f"val {val_bits:.4f} bits/byte"

    def band_verdict(self, step: int, metrics: dict) -> str | None:
        if not self.use_band:
            return None
        return reference_band.check(self.band, step, metrics[self.val_key])

    def plot(self, log_path: Path, out_png: Path) -> None:
        from tinyllm.train.plots import plot_run

        plot_run(log_path, out_png, self.band if self.use_band else None)

    def sample(self, model, data: TokenData, config: TrainConfig) -> str:
        return sample_after_training(model, data, config)


def task_for(config: TrainConfig):
    """The task of ``config.objective``: ``CausalLMTask`` for "clm", else the objective's
    ``tinyllm.objectives.trainer.ObjectiveTask``."""
    if config.objective == "clm":
        return CausalLMTask()
    from tinyllm.objectives.trainer import ObjectiveTask

    return ObjectiveTask(config)


def train(
    config: TrainConfig, resume: bool = False, progress: bool = True, echo=print, task=None
) -> RunResult:
    """Run (or resume) training as configured; returns the final numbers.

    ``task`` (default ``task_for(config)``: the causal LM for objective "clm") supplies the
    model, the batches, the loss and the evaluation (see ``CausalLMTask``); the loop is the
    same for every task.

    Ctrl-C saves a checkpoint at the number of optimizer steps completed: an interrupted step
    is rolled back (its batches are drawn again on resume), a completed one is kept, so a
    resumed run reproduces the uninterrupted run's losses bit for bit.
    """
    from tqdm import tqdm

    config.validate()
    if task is None:
        task = task_for(config)
    # data parallelism under mpiexec (one process otherwise), set up before the model: the
    # NCCL group picks this rank's GPU
    dp = DataParallel(init_process_group(config.device))
    tinyllm.manual_seed(config.seed)
    data = load_tokens(config.data, config.tokenizer)
    model = task.build_model(config, data)
    if config.device != "cpu":
        model.to(config.device)
    opt = make_optimizer(model, config)
    schedule = warmup_cosine(config.warmup, config.steps, config.min_lr_ratio)
    batch_rng = np.random.default_rng(config.seed)
    # rank 0's weights everywhere; only rank 0 logs, evaluates and writes checkpoints
    dp.broadcast_state(model)
    main = dp.is_main
    write_log = _write_jsonl if main else (lambda path, record: None)
    if not main:
        echo, progress = (lambda *args, **kwargs: None), False
    scaler = make_grad_scaler(config.precision, config.loss_scale_growth_interval, config.device)
    autocast_region = precision_context(config.precision, config.device)

    run_dir = Path(config.out_dir) / config.run_name()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, ckpt_path = run_dir / "log.jsonl", run_dir / "checkpoint.safetensors"
    start = 0
    next_rng = None  # get_rng_state() the next step starts from, when already taken
    if resume:
        start, batch_rng, next_rng = restore_state(
            ckpt_path, model, opt, config, echo=echo, scaler=scaler, world_size=dp.size
        )
        if main:
            _truncate_log(log_path, start)
        echo(f"resumed {run_dir} at step {start}")
    else:
        if main and log_path.exists():
            log_path.unlink()
    if main:
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    recorder = None
    if config.log_grads:
        from tinyllm.gradflow import GradFlowRecorder

        recorder = GradFlowRecorder(model)
    for line in task.start(model, data, config, run_dir):
        echo(line)
    history: list[dict] = []
    val_nats = val_bits = None
    loss_value = float("nan")
    t_start = time.perf_counter()
    moe_layers = moe_modules(model)
    moe_load = np.zeros((len(moe_layers), config.moe_experts), np.int64) if moe_layers else None

    def run_evaluation(done: int, loss_value: float, write) -> tuple[float, float]:
        metrics, text = task.evaluate(model, data, config)
        record = {"step": done, **metrics}
        message = f"step {done}: train loss {loss_value:.4f}, {text}"
        if moe_load is not None:  # rows per expert, per layer, since the last evaluation
            record["expert_load"] = moe_load.tolist()
            moe_load[...] = 0
        verdict = task.band_verdict(done, metrics)
        if verdict is not None:
            record["band"] = verdict
            message += f" — {verdict}"
        _write_jsonl(log_path, record)
        history.append(record)
        write(message)
        return metrics.get("val_nats_per_byte"), metrics.get("val_bits_per_byte")

    if resume and start > 0:
        # a run interrupted during an evaluation resumes at that step without its record
        old = _read_log(log_path)
        losses = [r["loss"] for r in old if "loss" in r]
        loss_value = losses[-1] if losses else loss_value
        vals = [r for r in old if r.get("step") == start and task.val_key in r]
        if vals:
            history.append(vals[-1])
            val_nats = vals[-1].get("val_nats_per_byte")
            val_bits = vals[-1].get("val_bits_per_byte")
        elif main and (start % config.eval_interval == 0 or start == config.steps):
            val_nats, val_bits = run_evaluation(start, loss_value, echo)

    done = start  # optimizer steps completed
    in_step = False  # inside a step whose update has not happened yet
    snapshot = None  # (batch sampler's state, get_rng_state()) the current step started from
    interrupted = False
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
               desc=task.progress_desc, unit="step", dynamic_ncols=True)  # fmt: skip
    try:
        for step in bar:
            # the random states this step starts from (a new device epoch, unless a checkpoint
            # just took it): an interrupted step restarts from them
            if next_rng is None:
                next_rng = backend.get_rng_state()
            snapshot, in_step = (batch_rng.bit_generator.state, next_rng), True
            next_rng = None
            t0 = time.perf_counter()
            lr = config.lr * schedule(step)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum = None  # sum of loss / grad_accum in float64, on the loss's device
            targets = 0  # labelled targets in the step's global batch
            for _ in range(config.grad_accum):
                batch, count = task.batch(data, config, batch_rng, dp)
                targets += count
                with autocast_region:
                    loss = task.loss(model, batch, config)
                    total = loss
                    if moe_layers:  # the routers' balancing losses join the objective, not the log
                        moe_load += np.stack([m.last_load for m in moe_layers])
                        aux = moe_aux_loss(moe_layers)
                        total = loss if aux is None else loss + aux
                total = total / config.grad_accum if config.grad_accum > 1 else total
                scaler.scale(total).backward()  # fp16: loss x S (the identity otherwise)
                part = loss.data.astype(np.float64) / config.grad_accum
                loss_sum = part if loss_sum is None else loss_sum + part
            dp.allreduce_gradients(model.parameters())  # averaged over ranks (1: nothing)
            loss_sum = dp.mean(loss_sum)
            scaler.unscale_(opt)  # fp16: true gradients (inf/NaN recorded) before clipping
            norm = tinyllm.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            loss_value, grad_norm = _step_values(loss_sum, norm)  # the step's one host sync
            if recorder is not None:
                recorder.before_step()
            with _sigint_deferred():  # the update and its log line: all or nothing
                scale = scaler.get_scale()
                scaler.step(opt)  # fp16: skipped when a gradient is inf/NaN
                scaler.update()
                opt.zero_grad()
                done, in_step = step + 1, False
                if recorder is not None:
                    for record in recorder.after_step(done):
                        write_log(log_path, {"kind": "grad", **record})
                seconds = time.perf_counter() - t0
                rates = task.throughput(targets, seconds)
                if done % config.log_interval == 0 or done == config.steps:
                    record = {"step": done, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                              **rates, "elapsed_s": time.perf_counter() - t_start}  # fmt: skip
                    if scaler.is_enabled():  # the scale this step used; skipped: it backed off
                        record["loss_scale"] = scale
                        record["skipped"] = scaler.get_scale() < scale
                    write_log(log_path, record)
                    history.append(record)
            bar.set_postfix(
                {
                    "loss": f"{loss_value:.3f}",
                    "lr": f"{lr:.2e}",
                    task.rate_label: f"{targets / seconds:,.0f}",
                }  # fmt: skip
            )
            if main and (done % config.eval_interval == 0 or done == config.steps):
                val_nats, val_bits = run_evaluation(
                    done, loss_value, bar.write if progress else echo
                )
            if done % config.checkpoint_interval == 0 and done != config.steps:
                next_rng = backend.get_rng_state()  # the next step starts from it
                if main:
                    save_state(ckpt_path, model, opt, done, batch_rng, config, next_rng,
                               scaler, dp.size)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        next_rng = _rollback_interrupted(in_step, snapshot, batch_rng, opt, next_rng)
        echo(f"\ninterrupted: saving a checkpoint at step {done} to {ckpt_path}")
        if main:
            save_state(ckpt_path, model, opt, done, batch_rng, config, next_rng, scaler, dp.size)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    result = RunResult(run_dir, done, loss_value, val_nats, val_bits, seconds, interrupted, history)
    result.is_main = main
    if interrupted or not main:
        return result
    save_state(ckpt_path, model, opt, done, batch_rng, config, backend.get_rng_state(), scaler,
               dp.size)  # fmt: skip
    task.plot(log_path, run_dir / "loss.png")
    if recorder is not None:
        from tinyllm.gradflow import plot_gradflow

        plot_gradflow(log_path, run_dir / "gradflow.png")
    result.sample = task.sample(model, data, config)
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
