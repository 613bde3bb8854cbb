"""``tinyllm train``: train a Llama, GPT or Mamba on the embedded corpus (or a text file)."""

from __future__ import annotations

import dataclasses
import sys

from tinyllm.train.config import TrainConfig, load_config_file

FLAG_HELP = {
    "arch": "model family: llama, gpt, mamba or rwkv",
    "d_state": "mamba only: SSM state size N per channel",
    "d_conv": "mamba only: width of the causal depthwise convolution",
    "expand": "mamba only: d_inner = expand * d_model",
    "steps": "optimizer steps",
    "batch_size": "sequences per micro-batch",
    "seq_len": "context length in tokens",
    "lr": "peak learning rate (AdamW)",
    "warmup": "linear warmup steps before cosine decay",
    "device": "cpu or cuda",
    "data": "a UTF-8 text file to train on (default: the embedded pydoc corpus)",
    "tokenizer": "a BPE tokenizer JSON from `tinyllm tokenizer train` (default: bytes)",
    "log_grads": "log per-parameter gradient/update norms to the run's JSONL and plot them",
    "name": "run folder name under --out-dir",
    "eval_batches": "evaluate on the first N validation batches only (None: the whole split)",
    "moe_experts": "llama only: a mixture of E experts in every layer's FFN (0: dense)",
    "moe_top_k": "experts per token",
    "moe_router": "softmax_topk (Mixtral), topk_softmax, noisy_topk or aux_free (DeepSeek-V3)",
    "moe_aux_coef": "coefficient of the Switch load-balancing loss",
    "moe_z_coef": "coefficient of the router z-loss",
    "moe_capacity_factor": "expert capacity factor; overflowing tokens are dropped (None: none)",
    "moe_shared_experts": "DeepSeekMoE shared experts, always active",
    "moe_expert_hidden": "hidden width of each expert (default: ffn_hidden)",
    "precision": "fp32, bf16 (autocast: GEMMs in bfloat16, emulated) or fp16 (autocast + "
    "dynamic loss scaling); master weights stay float32",
    "loss_scale_growth_interval": "fp16: clean steps before the loss scale doubles",
    "objective": "clm (next token, the default), mlm (BERT masking), prefixlm (bidirectional "
    "prefix, causal continuation) or span (T5 span corruption, encoder-decoder); mlm and span "
    "add special ids above the byte range: <pad> <mask> </s> (256-258) and span's 100 "
    "sentinels <extra_id_k> (259-358); losses are nats per labelled token; `tinyllm sample` "
    "refuses non-clm runs",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a small Llama/GPT/Mamba on the embedded corpus (the main job)",
        description="Train a language model with AdamW, warmup + cosine decay and gradient "
        "clipping; writes runs/<name>/ (config, JSONL log, loss.png, checkpoint).",
    )
    p.add_argument("--config", help="a TOML or JSON file of configuration keys")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action="store_true", default=None,
                           help=FLAG_HELP.get(f.name, ""))  # fmt: skip
            continue
        kind = {int: int, float: float, str: str}.get(type(default), None)
        if f.name in ("n_kv_head", "ffn_hidden", "eval_batches", "moe_expert_hidden"):
            kind = int
        elif f.name == "moe_capacity_factor":
            kind = float
        elif f.name in ("data", "tokenizer", "name"):
            kind = str
        elif f.name == "tie_embeddings":
            p.add_argument("--tie-embeddings", dest="tie_embeddings", choices=["yes", "no"],
                           default=None, help="tie input and output embeddings")  # fmt: skip
            continue
        p.add_argument(flag, dest=f.name, type=kind, default=None,
                       help=f"{FLAG_HELP.get(f.name, '')} (default {default})".strip())  # fmt: skip
    p.set_defaults(func=run)


def config_from_args(args) -> TrainConfig:
    values = load_config_file(args.config) if args.config else {}
    if args.resume:
        # a resumed run starts from the configuration it was started with
        from pathlib import Path

        where = {k: getattr(args, k) for k in ("name", "out_dir") if getattr(args, k) is not None}
        probe = TrainConfig.from_dict({**values, **where})
        saved = Path(probe.out_dir) / probe.run_name() / "config.json"
        if saved.is_file():
            values = {**load_config_file(saved), **values}
    for f in dataclasses.fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = (
                {"yes": True, "no": False}.get(given, given)
                if f.name == "tie_embeddings"
                else given
            )
    config = TrainConfig.from_dict(values)
    config.validate()
    return config


def run(args) -> int:
    from tinyllm.io.checkpoint import CheckpointError
    from tinyllm.train.loop import train

    try:
        config = config_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"tinyllm train: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(config, resume=args.resume, progress=not args.no_progress)
    except (FileNotFoundError, CheckpointError, UnicodeDecodeError) as exc:
        # a missing --data/--tokenizer file, or a --resume checkpoint that is absent/corrupt
        print(f"tinyllm train: {exc}", file=sys.stderr)
        return 2
    if result.interrupted:
        again = f" --config {args.config}" if args.config else ""
        print(f"stopped at step {result.step}; continue with: tinyllm train --resume "
              f"--name {result.run_dir.name}{again}")  # fmt: skip
        return 130
    if not result.is_main:  # data parallel: rank 0 reports
        return 0
    if config.objective != "clm":
        vals = [r["val_loss"] for r in result.history if "val_loss" in r]
        print(f"\ndone: {result.step} steps in {result.seconds / 60:.1f} min; final validation "
              f"{vals[-1]:.4f} nats per labelled token ({config.objective})")  # fmt: skip
        print(f"run folder: {result.run_dir} (loss.png, log.jsonl, checkpoint.safetensors)")
        return 0
    print(f"\ndone: {result.step} steps in {result.seconds / 60:.1f} min; "
          f"final validation {result.val_bits_per_byte:.4f} bits/byte "
          f"({result.val_nats_per_byte:.4f} nats/byte)")  # fmt: skip
    print(f"run folder: {result.run_dir} (loss.png, log.jsonl, checkpoint.safetensors)")
    if result.sample:
        print("\nsample:\n" + "-" * 60 + f"\n{result.sample}\n" + "-" * 60)
    return 0
