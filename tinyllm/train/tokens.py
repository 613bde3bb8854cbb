"""Turning text into training and validation tokens, and counting bytes for per-byte losses.

The split is on UTF-8 bytes (first 90% training, last 10% validation) *before* tokenizing, so
runs with different tokenizers see the same text and their per-byte losses compare:

    nats per byte = (sum of token losses in nats) / (number of bytes those tokens cover)
    bits per byte = nats per byte / ln 2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyllm.data.corpus import TRAIN_FRACTION, load_text


@dataclass
class TokenData:
    train: np.ndarray  # int32 token ids
    val: np.ndarray
    vocab_size: int
    val_bytes_per_token: float  # bytes of validation text per validation token
    encode: object  # str -> list[int]
    decode: object  # list[int] -> str
    val_text: str


def load_tokens(data_path: str | None, tokenizer_path: str | None) -> TokenData:
    """Read the corpus (or ``data_path``), split by bytes, tokenize with bytes or a BPE file."""
    raw = load_text(data_path).encode("utf-8")
    cut = int(len(raw) * TRAIN_FRACTION)
    train_bytes, val_bytes = raw[:cut], raw[cut:]
    val_text = val_bytes.decode("utf-8", errors="replace")
    if tokenizer_path is None:
        train = np.frombuffer(train_bytes, dtype=np.uint8).astype(np.int32)
        val = np.frombuffer(val_bytes, dtype=np.uint8).astype(np.int32)

        def encode(text: str) -> list[int]:
            return list(text.encode("utf-8"))

        def decode(ids) -> str:
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

        return TokenData(train, val, 256, 1.0, encode, decode, val_text)

    from tinyllm.tokenizers import BPETokenizer

    tok = BPETokenizer.load(tokenizer_path)
    train = np.asarray(
        tok.encode(train_bytes.decode("utf-8", errors="replace"), allowed_special="none"),
        dtype=np.int32,
    )
    val = np.asarray(tok.encode(val_text, allowed_special="none"), dtype=np.int32)
    return TokenData(
        train,
        val,
        tok.vocab_size,
        len(val_bytes) / max(len(val), 1),
        lambda text: tok.encode(text, allowed_special="none"),
        tok.decode,
        val_text,
    )
