"""``tinyllm sample RUN_DIR``: generate text from a trained run, streaming tokens.

RUN_DIR is a folder written by ``tinyllm train`` (config.json, checkpoint.safetensors) or by
``tinyllm quantize`` (the same plus quant.json: the model is rebuilt with its quantized layers
by ``tinyllm.quant.load_quantized``). ``--device`` defaults to the device the run was trained
on (``device`` in its config.json); ``cuda`` where no GPU is usable is a one-line error.

RoPE context extension: a checkpoint whose metadata holds ``model_config`` (a
``ModelConfig.to_dict()``) with a ``rope_scaling`` gets it back; ``--rope-scaling TYPE:FACTOR``
(``linear:2``, ``ntk:4``, ``yarn:8``; yarn's original context is the run's ``seq_len``)
sets one, ``--rope-scaling none`` drops it. A scaled Llama samples with a context of
factor x the training context (``block_size``); other architectures refuse a scaling.
"""

from __future__ import annotations

import codecs
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text from a trained run (KV cache)")
    p.add_argument("run_dir", help="a run folder written by `tinyllm train` (runs/<name>)")
    p.add_argument("--prompt", default="The ", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="where to run (default: the run's device, from its config.json)",
    )
    p.add_argument(
        "--rope-scaling",
        default=None,
        metavar="TYPE:FACTOR",
        help="RoPE context extension of a llama run: linear:F, ntk:F or yarn:F (context F x "
        "the training context), or none (default: the checkpoint's, if it has one)",
    )
    p.set_defaults(func=run)


def parse_rope_scaling_flag(text: str, train_context: int) -> dict | None:
    """``--rope-scaling`` TYPE:FACTOR as a ``ModelConfig.rope_scaling`` dict (None for
    "none"); yarn's original context is ``train_context``. A ValueError names the flag."""
    if text.strip().lower() == "none":
        return None
    kind, _, factor = text.partition(":")
    kind = kind.strip().lower()
    kinds = ("linear", "ntk", "yarn")
    try:
        value = float(factor)
    except ValueError:
        value = None
    if kind not in kinds or value is None:
        raise ValueError(
            f"--rope-scaling must be TYPE:FACTOR with TYPE one of {kinds} (e.g. yarn:8) or "
            f"none, got {text!r}"
        )
    if kind == "yarn":
        return {"type": "yarn", "factor": value, "original_max_position": train_context}
    return {"type": kind, "factor": value}


def apply_rope_scaling(model, scaling: dict | None, train_context: int) -> None:
    """Give a loaded Llama ``scaling`` (``set_rope_scaling``, which validates it and updates
    ``model.config.rope_scaling``) and a context (``block_size``) of factor x
    ``train_context``; a model without RoPE refuses a scaling."""
    import dataclasses

    from tinyllm.nn.positional import set_rope_scaling

    config = getattr(model, "config", None)
    has_field = dataclasses.is_dataclass(config) and "rope_scaling" in {
        f.name for f in dataclasses.fields(config)
    }
    if scaling is not None and not has_field:
        arch = getattr(config, "arch", type(model).__name__)
        raise ValueError(f"--rope-scaling: the run's model ({arch}) has no RoPE to scale")
    if not has_field:
        return
    set_rope_scaling(model, scaling)  # raises (e.g. gpt: learned positions) before changing
    factor = 1.0 if scaling is None else float(model.config.rope_scaling["factor"])
    block = max(train_context, int(round(factor * train_context)))
    model.config = dataclasses.replace(model.config, block_size=block)


def load_run(run_dir: str | Path, rope_scaling: str | None = None):
    """(model, config, token_bytes, encode) from a run folder, checked before use; a folder
    with a quant.json (from ``tinyllm quantize``) gives its quantized model. ``rope_scaling``:
    the ``--rope-scaling`` text (None: the checkpoint's ``model_config.rope_scaling``, if any)."""
    from tinyllm.io.checkpoint import CheckpointError, load_checkpoint
    from tinyllm.models import build_model
    from tinyllm.train.config import TrainConfig
    from tinyllm.train.loop import model_config_for

    run_dir = Path(run_dir)
    config_path, ckpt = run_dir / "config.json", run_dir / "checkpoint.safetensors"
    for path in (config_path, ckpt):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (is {run_dir} a run?)")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    if config.tokenizer:
        from tinyllm.tokenizers import BPETokenizer

        tok = BPETokenizer.load(config.tokenizer)
        vocab, encode = tok.vocab_size, lambda s: tok.encode(s, allowed_special="none")
        token_bytes = lambda i: tok.decode_bytes([i])  # noqa: E731
    else:
        vocab, encode = 256, lambda s: list(s.encode("utf-8"))
        token_bytes = lambda i: bytes([i])  # noqa: E731
    if (run_dir / "quant.json").is_file():
        from tinyllm.quant import load_quantized

        model = load_quantized(run_dir)  # in eval mode
        if model.config.vocab_size != vocab:
            raise CheckpointError(
                f"{ckpt} has a vocabulary of {model.config.vocab_size}, the run's tokenizer {vocab}"
            )
        if rope_scaling is not None:
            scaling = parse_rope_scaling_flag(rope_scaling, config.seq_len)
            apply_rope_scaling(model, scaling, config.seq_len)
        return model, config, token_bytes, encode
    model = build_model(model_config_for(config, vocab))
    arrays, meta = load_checkpoint(ckpt)
    state = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt} does not fit the run's model: {exc}") from exc
    saved = (meta.get("model_config") or {}).get("rope_scaling")  # None: none, or older file
    if rope_scaling is not None or saved is not None:
        scaling = saved
        if rope_scaling is not None:  # the flag wins over the checkpoint's
            scaling = parse_rope_scaling_flag(rope_scaling, config.seq_len)
        apply_rope_scaling(model, scaling, config.seq_len)
    model.eval()
    return model, config, token_bytes, encode


def cuda_error(device: str, requested: bool) -> str | None:
    """None when ``device`` is usable, else the one-line reason (CUDA's failed check)."""
    if device != "cuda":
        return None
    from tinyllm.backend import cuda_status

    status = cuda_status()
    if status.ok:
        return None
    where = "--device cuda" if requested else "the run's device is cuda (its config.json)"
    hint = "" if requested else "; pass --device cpu to sample on the CPU"
    return f"{where}, but {status.message}{hint}"


def run(args) -> int:
    import numpy as np

    import tinyllm
    from tinyllm.io.checkpoint import CheckpointError

    try:
        model, config, token_bytes, encode = load_run(args.run_dir, args.rope_scaling)
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        print(f"tinyllm sample: {exc}", file=sys.stderr)
        return 2
    device = args.device or config.device
    error = cuda_error(device, requested=args.device is not None)
    if error is not None:
        print(f"tinyllm sample: {error}", file=sys.stderr)
        return 2
    ids = encode(args.prompt)
    if not ids:
        print("tinyllm sample: --prompt must not be empty", file=sys.stderr)
        return 2
    model.to(device)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sys.stdout.write(args.prompt)

    def stream(token: int) -> None:
        sys.stdout.write(decoder.decode(token_bytes(int(token))))
        sys.stdout.flush()

    model.generate(
        tinyllm.tensor(np.asarray([ids], dtype=np.int64), device=device),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=np.random.default_rng(args.seed),
        callback=stream,
    )
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
    return 0
