"""Tokenizers: byte-level BPE (GPT-2 style) and WordPiece (BERT).

* :class:`BPETokenizer` (``bpe.py``): train / encode / decode / save / load; the incremental
  trainer is ``bpe_trainer.py``, pre-tokenization ``pretokenize.py``, GPT-2's byte-to-character
  table ``bytes_unicode.py``.
* :class:`WordPieceTokenizer` (``wordpiece.py``) on BERT's basic tokenization
  (``bert_basic.py``); :func:`find_minilm_files` (``pretrained.py``) locates the optional
  all-MiniLM-L6-v2 vocabulary and weights.
"""

from tinyllm.tokenizers.bert_basic import BertBasicTokenizer
from tinyllm.tokenizers.bpe import BPETokenizer
from tinyllm.tokenizers.pretokenize import GPT2_PATTERN, GPT4_PATTERN
from tinyllm.tokenizers.pretrained import MiniLMFiles, find_minilm_files, require_minilm_files
from tinyllm.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "BPETokenizer",
    "BertBasicTokenizer",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "MiniLMFiles",
    "WordPieceTokenizer",
    "find_minilm_files",
    "require_minilm_files",
]
