"""``tinyllm sample RUN_DIR``: generate text from a trained run, streaming tokens.

RUN_DIR is a folder written by ``tinyllm train`` (config.json, checkpoint.safetensors) or by
``tinyllm quantize`` (the same plus quant.json: the model is rebuilt with its quantized layers
by ``tinyllm.quant.load_quantized``). ``--device`` defaults to the device the run was trained
on (``device`` in its config.json); ``cuda`` where no GPU is usable is a one-line error.
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
    p.set_defaults(func=run)


def load_run(run_dir: str | Path):
    """(model, config, token_bytes, encode) from a run folder, checked before use; a folder
    with a quant.json (from ``tinyllm quantize``) gives its quantized model."""
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
        return model, config, token_bytes, encode
    model = build_model(model_config_for(config, vocab))
    arrays, _ = load_checkpoint(ckpt)
    state = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt} does not fit the run's model: {exc}") from exc
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
        model, config, token_bytes, encode = load_run(args.run_dir)
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
