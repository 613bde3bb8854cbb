"""GPT-2's reversible map from the 256 byte values to 256 printable Unicode characters.

Byte-level BPE works on bytes, but vocabularies and merge lists are stored as text. GPT-2
(openai/gpt-2 ``encoder.py``, ``bytes_to_unicode``) maps every byte to one printable
character so that a token's bytes become a readable string with no spaces or control
characters in it:

* bytes 33-126 (``!`` .. ``~``), 161-172 (``¡`` .. ``¬``) and 174-255 (``®`` .. ``ÿ``) map to
  the character with the same code point;
* the remaining 68 bytes (0-32, 127-160, 173) map, in increasing byte order, to the code
  points 256, 257, ... So the space 0x20 becomes ``Ġ`` (U+0120) and the newline 0x0A ``Ċ``.

The same table is used by the Hugging Face ``ByteLevel`` pre-tokenizer, which is why the order
of these characters' code points decides the Hugging Face BPE trainer's tie-breaks (see
``bpe_trainer.py``).
"""

from __future__ import annotations


def _build_byte_to_unicode() -> tuple[str, ...]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    kept = set(printable)
    table = [""] * 256
    next_code_point = 256
    for byte in range(256):
        if byte in kept:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(next_code_point)
            next_code_point += 1
    return tuple(table)


# BYTE_TO_UNICODE[b] is the printable character that stands for byte b.
BYTE_TO_UNICODE: tuple[str, ...] = _build_byte_to_unicode()
# UNICODE_TO_BYTE[ch] is the byte that the character ch stands for.
UNICODE_TO_BYTE: dict[str, int] = {ch: byte for byte, ch in enumerate(BYTE_TO_UNICODE)}


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table as a dict (a fresh copy)."""
    return dict(enumerate(BYTE_TO_UNICODE))


def bytes_to_token_string(data: bytes) -> str:
    """The printable string for a token's bytes: ``b" the"`` -> ``"Ġthe"``."""
    return "".join(BYTE_TO_UNICODE[b] for b in data)


def token_string_to_bytes(text: str) -> bytes:
    """Inverse of :func:`bytes_to_token_string`; raises ValueError on a character outside the
    256-character table (for example a raw space)."""
    try:
        return bytes(UNICODE_TO_BYTE[ch] for ch in text)
    except KeyError as error:
        raise ValueError(
            f"token_string_to_bytes: {text!r} contains {error.args[0]!r}, which is not one of "
            "the 256 byte-level characters"
        ) from None
