"""``tinyllm tokenizer``: train a byte-level BPE tokenizer, encode text, decode ids.

    tinyllm tokenizer train --vocab-size 4096 --out tok.json [--data corpus.txt]
    tinyllm tokenizer encode --tokenizer tok.json "some text"      # prints ids
    tinyllm tokenizer decode --tokenizer tok.json 464 3290 318     # prints text

Without ``--data``, training uses the default corpus (``tinyllm.data.corpus.load_text``).
"""

from __future__ import annotations

import argparse
import sys
import time

PATTERNS = ("gpt2", "gpt4", "none")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tokenizer`` subcommand and its ``train`` / ``encode`` / ``decode`` actions."""
    parser = subparsers.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer, encode text, decode ids",
        description="Byte-level BPE tokenizer (GPT-2 style): train, encode, decode.",
    )
    actions = parser.add_subparsers(dest="tokenizer_action", metavar="ACTION")

    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    parser.set_defaults(func=show_help)

    train = actions.add_parser("train", help="train a tokenizer and save it as JSON")
    train.add_argument(
        "--vocab-size",
        type=int,
        required=True,
        metavar="N",
        help="total vocabulary size: 256 bytes + merges + special tokens",
    )
    train.add_argument("--out", required=True, metavar="PATH", help="where to write the JSON")
    train.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="UTF-8 text file to train on (default: the built-in corpus)",
    )
    train.add_argument(
        "--pattern",
        choices=PATTERNS,
        default="gpt2",
        help="pre-tokenization expression (default: gpt2; none: no splitting)",
    )
    train.add_argument(
        "--special",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a special token, e.g. '<|endoftext|>' (repeatable)",
    )
    train.set_defaults(func=run_train)

    encode = actions.add_parser("encode", help="print the token ids of TEXT")
    encode.add_argument("--tokenizer", required=True, metavar="PATH", help="tokenizer JSON")
    encode.add_argument(
        "text",
        nargs="?",
        default=None,
        metavar="TEXT",
        help="text to encode (default: read standard input)",
    )
    encode.add_argument(
        "--allowed-special",
        choices=("none_raise", "none", "all"),
        default="none_raise",
        help="how special-token text is treated (default: none_raise = error)",
    )
    encode.set_defaults(func=run_encode)

    decode = actions.add_parser("decode", help="print the text of token IDS")
    decode.add_argument("--tokenizer", required=True, metavar="PATH", help="tokenizer JSON")
    decode.add_argument("ids", nargs="+", type=int, metavar="IDS", help="token ids")
    decode.set_defaults(func=run_decode)


def _pattern(name: str) -> str | None:
    from tinyllm.tokenizers.pretokenize import GPT2_PATTERN, GPT4_PATTERN

    return {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "none": None}[name]


def _error(message: str) -> int:
    print(f"tinyllm tokenizer: error: {message}", file=sys.stderr)
    return 1


def run_train(args: argparse.Namespace) -> int:
    """Train on ``--data`` (or the default corpus) and write ``--out``."""
    from tinyllm.data.corpus import load_text
    from tinyllm.tokenizers.bpe import BPETokenizer

    try:
        text = load_text(args.data)
    except (OSError, UnicodeDecodeError) as error:
        return _error(f"cannot read --data: {error}")
    start = time.perf_counter()
    try:
        tokenizer = BPETokenizer.train(
            text, args.vocab_size, pattern=_pattern(args.pattern), special_tokens=args.special
        )
    except (ValueError, TypeError) as error:
        return _error(str(error))
    seconds = time.perf_counter() - start
    try:
        tokenizer.save(args.out)
    except OSError as error:
        return _error(f"cannot write --out: {error}")
    print(
        f"trained {tokenizer.vocab_size} tokens ({len(tokenizer.merges)} merges) on "
        f"{len(text.encode('utf-8'))} bytes in {seconds:.2f} s -> {args.out}"
    )
    return 0


def _load(path: str):
    from tinyllm.tokenizers.bpe import BPETokenizer

    return BPETokenizer.load(path)


def run_encode(args: argparse.Namespace) -> int:
    """Print the ids of TEXT (or standard input), separated by spaces."""
    try:
        tokenizer = _load(args.tokenizer)
    except (OSError, ValueError) as error:
        return _error(str(error))
    text = args.text if args.text is not None else sys.stdin.read()
    try:
        ids = tokenizer.encode(text, allowed_special=args.allowed_special)
    except ValueError as error:
        return _error(str(error))
    print(" ".join(str(token_id) for token_id in ids))
    return 0


def run_decode(args: argparse.Namespace) -> int:
    """Print the text of the given ids."""
    try:
        tokenizer = _load(args.tokenizer)
        text = tokenizer.decode(args.ids)
    except (OSError, ValueError) as error:
        return _error(str(error))
    print(text)
    return 0
