"""``tinyllm sample RUN_DIR``: generate text from a trained run, streaming tokens."""

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
    p.set_defaults(func=run)


def load_run(run_dir: str | Path):
    """(model, config, token_bytes, encode) from a run folder, checked before use."""
    from tinyllm.io.checkpoint import CheckpointError, load_checkpoint
    from tinyllm.models import build_model
    from tinyllm.train.config import TrainConfig
    from tinyllm.train.loop import model_config_for

    run_dir = Path(run_dir)
    config_path, ckpt = run_dir / "config.json", run_dir / "checkpoint.safetensors"
    for path in (config_path, ckpt):
        if not path.is_file():
            raise FileNotFoundError(f"tinyllm sample: {path} does not exist (is {run_dir} a run?)")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    if config.tokenizer:
        from tinyllm.tokenizers import BPETokenizer

        tok = BPETokenizer.load(config.tokenizer)
        vocab, encode = tok.vocab_size, lambda s: tok.encode(s, allowed_special="none")
        token_bytes = lambda i: tok.decode_bytes([i])  # noqa: E731
    else:
        vocab, encode = 256, lambda s: list(s.encode("utf-8"))
        token_bytes = lambda i: bytes([i])  # noqa: E731
    model = build_model(model_config_for(config, vocab))
    arrays, _ = load_checkpoint(ckpt)
    state = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt} does not fit the run's model: {exc}") from exc
    model.eval()
    return model, config, token_bytes, encode


def run(args) -> int:
    import numpy as np

    import tinyllm
    from tinyllm.io.checkpoint import CheckpointError

    try:
        model, config, token_bytes, encode = load_run(args.run_dir)
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        print(f"tinyllm sample: {exc}", file=sys.stderr)
        return 2
    ids = encode(args.prompt)
    if not ids:
        print("tinyllm sample: --prompt must not be empty", file=sys.stderr)
        return 2
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sys.stdout.write(args.prompt)

    def stream(token: int) -> None:
        sys.stdout.write(decoder.decode(token_bytes(int(token))))
        sys.stdout.flush()

    model.generate(
        tinyllm.tensor(np.asarray([ids], dtype=np.int64)),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=np.random.default_rng(args.seed),
        callback=stream,
    )
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
    return 0
