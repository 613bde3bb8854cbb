"""``tinyllm serve RUN_DIR``: an OpenAI-compatible HTTP server for a trained run.

Needs the ``serve`` extra (``pip install -e ".[serve]"``: FastAPI and uvicorn). Requests are
served by the continuous-batching engine on a paged KV cache (``tinyllm.serve``); Ctrl-C
shuts down cleanly.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server for a run")
    p.add_argument("run_dir", help="a run folder written by `tinyllm train` (runs/<name>)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default=None, help="the served name (default: the folder)")
    p.add_argument("--num-blocks", type=int, default=512, help="KV cache blocks")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--max-num-seqs", type=int, default=32, help="requests per batch")
    p.add_argument("--kernel", choices=["reference", "numba", "cuda", "auto"], default="reference",
                   help="paged decode attention tier (auto: numba on a CPU, cuda on a GPU; "
                        "reference: bitwise the contiguous formula)")  # fmt: skip
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import uvicorn
    except ImportError:
        print('tinyllm serve: needs FastAPI and uvicorn: pip install -e ".[serve]"',
              file=sys.stderr)  # fmt: skip
        return 2
    from tinyllm.cli.sample_cmd import load_run
    from tinyllm.io.checkpoint import CheckpointError
    from tinyllm.serve.engine import LLMEngine
    from tinyllm.serve.server import build_app

    try:
        model, config, token_bytes, encode = load_run(args.run_dir)
        if getattr(model.config, "arch", None) not in ("gpt", "llama"):
            raise ValueError("only GPT and Llama runs can be served")
        engine = LLMEngine(
            model, num_blocks=args.num_blocks, block_size=args.block_size,
            max_num_seqs=args.max_num_seqs, token_bytes=token_bytes, kernel=args.kernel,
        )  # fmt: skip
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        print(f"tinyllm serve: {exc}", file=sys.stderr)
        return 2
    name = args.model_name or Path(args.run_dir).name
    app = build_app(engine, name, encode)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
