"""``tinyllm quantize``: write a quantized checkpoint of a trained run or of MiniLM.

    tinyllm quantize runs/<name> --method gptq --bits 4 --group-size 128
        -> runs/<name>-gptq-w4g128/ (config.json, checkpoint.safetensors, quant.json),
           which ``tinyllm sample`` loads (the checkpoint carries ``model_config``, as a
           training checkpoint does: a remembered RoPE scaling is kept)
    tinyllm quantize all-MiniLM-L6-v2 --method nf4 --out runs/minilm-nf4

Calibrated methods (gptq, awq, smoothquant) use ``--calib-batches`` windows of the run's
training split (fixed seed), or fixed corpus sentences for MiniLM; so does ZeroQuant's
layer-by-layer distillation (``--method zeroquant --lkd-steps N``, ``tinyllm.quant.lkd``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "tinyllm quantize"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    from tinyllm.quant.model import METHODS

    p = subparsers.add_parser(
        "quantize",
        help="quantize a trained run (or all-MiniLM-L6-v2) into a packed checkpoint",
        description="Replace the linear layers by quantized ones (RTN, GPTQ, AWQ, NF4, FP8, "
        "LLM.int8(), SmoothQuant, ZeroQuant) and write a checkpoint `tinyllm sample` loads.",
    )
    p.add_argument("source", help="a run folder (runs/<name>) or all-MiniLM-L6-v2 / a BERT folder")
    p.add_argument("--method", choices=METHODS, default="gptq")
    p.add_argument(
        "--bits", type=int, default=4, help="weight bits for integer methods (default 4)"
    )
    p.add_argument("--group-size", type=int, default=128,
                   help="columns per group; 0 or -1: per output channel (default 128)")  # fmt: skip
    p.add_argument("--symmetric", action="store_true", help="absmax instead of zero-point")
    p.add_argument("--act-order", action="store_true", help="GPTQ: columns by descending H_jj")
    p.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    p.add_argument("--threshold", type=float, default=6.0, help="LLM.int8() outlier threshold")
    p.add_argument("--fmt", choices=["e4m3", "e5m2"], default="e4m3", help="FP8 format")
    p.add_argument("--calib-batches", type=int, default=8, metavar="N",
                   help="calibration batches of the run's batch size (default 8)")  # fmt: skip
    p.add_argument("--sequential", action="store_true",
                   help="collect each layer's inputs with earlier layers quantized")  # fmt: skip
    p.add_argument("--lkd-steps", type=int, default=0, metavar="N",
                   help="zeroquant: N steps of layer-by-layer distillation per block (ZeroQuant's "
                   "LKD) on the calibration batches (default 0: none)")  # fmt: skip
    p.add_argument("--lkd-lr", type=float, default=1e-4, help="zeroquant LKD: Adam's learning rate")
    p.add_argument("--out", default=None, help="output folder (default <run>-<method>-w<b>g<g>)")
    p.set_defaults(func=run)


def _options(args) -> dict:
    opts = {"sequential": args.sequential}
    if args.lkd_steps and args.method != "zeroquant":
        raise ValueError(f"--lkd-steps is ZeroQuant's distillation, not for --method {args.method}")
    if args.lkd_steps < 0:
        raise ValueError(f"--lkd-steps must be >= 0, got {args.lkd_steps}")
    if args.method == "gptq":
        opts["act_order"] = args.act_order
    elif args.method == "smoothquant":
        opts["alpha"] = args.alpha
    elif args.method == "llm_int8":
        opts["threshold"] = args.threshold
    elif args.method == "fp8":
        opts["fmt"] = args.fmt
    elif args.method == "zeroquant" and args.lkd_steps > 0:
        opts["lkd_steps"], opts["lkd_lr"] = args.lkd_steps, args.lkd_lr
        opts["lkd_progress_bar"] = True
    return opts


def default_out(source: Path, method: str, bits: int, group: int | None) -> Path:
    tag = {"nf4": "nf4", "fp8": "fp8", "llm_int8": "int8"}.get(method)
    if tag is None:
        tag = f"w{bits}" + (f"g{group}" if group else "")
    return source.parent / f"{source.name}-{method}-{tag}"


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (``tinyllm.io.atomic_write``)."""
    from tinyllm.io import atomic_write

    with atomic_write(path) as f:
        f.write(data)


def run(args) -> int:
    import numpy as np

    from tinyllm.quant.model import quantize_model, save_quantized

    group = args.group_size if args.group_size and args.group_size > 0 else None
    source = Path(args.source)
    is_run = (source / "config.json").is_file() and (source / "checkpoint.safetensors").is_file()
    sym = True if args.symmetric else None
    try:
        options = _options(args)
        if not is_run:  # a BERT sentence encoder
            from tinyllm.quant.pretrained import quantize_pretrained, save_quantized_pretrained

            model = quantize_pretrained(args.source, args.method, args.bits, group,
                                        symmetric=sym, **options)  # fmt: skip
            out = Path(
                args.out or default_out(Path("runs") / "minilm", args.method, args.bits, group)
            )
            meta = {"method": args.method, "bits": args.bits, "group_size": group}
            save_quantized_pretrained(model, out, args.source, meta)
        else:
            from tinyllm.cli.sample_cmd import load_run
            from tinyllm.data.batches import random_windows
            from tinyllm.train.tokens import load_tokens

            model, config, _, _ = load_run(source)
            calibration = None
            if args.method in ("gptq", "awq", "smoothquant") or options.get("lkd_steps"):
                data = load_tokens(config.data, config.tokenizer)
                rng = np.random.default_rng(1234)
                calibration = [random_windows(data.train, config.batch_size, config.seq_len, rng)[0]
                               for _ in range(args.calib_batches)]  # fmt: skip
            import tinyllm

            quantize_model(model, args.method, args.bits, group, symmetric=sym,
                           calibration=calibration,
                           forward=lambda m, b: m(tinyllm.tensor(b)), **options)  # fmt: skip
            out = Path(args.out) if args.out else default_out(source, args.method, args.bits, group)
            out.mkdir(parents=True, exist_ok=True)
            _write_atomic(out / "config.json", (source / "config.json").read_bytes())
            meta = {"vocab_size": model.config.vocab_size, "source": str(source),
                    "quant": {"method": args.method, "bits": args.bits,
                              "group_size": group}}  # fmt: skip
            # save_quantized adds model_config: the model as loaded (a remembered RoPE scaling
            # included), which load_quantized rebuilds, as in `tinyllm train`'s checkpoints
            save_quantized(model, out / "checkpoint.safetensors", meta)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    from tinyllm.quant.model import model_nbytes

    summary = {"method": args.method, "bits": args.bits, "group_size": group,
               "bytes": model_nbytes(model), "source": str(source)}  # fmt: skip
    if args.lkd_steps and args.method == "zeroquant":
        summary["lkd_steps"], summary["lkd_lr"] = args.lkd_steps, args.lkd_lr
    _write_atomic(out / "quant.json", (json.dumps(summary, indent=2) + "\n").encode())
    print(f"wrote {out} ({summary['bytes']:,} bytes of weights)")
    return 0
