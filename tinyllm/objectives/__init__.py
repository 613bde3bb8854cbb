"""Training objectives beyond next-token prediction: BERT's masked LM, PrefixLM, T5's span
corruption and BART's text infilling (one file each), the tasks that train them
(``tasks.py``) and their loop (``trainer.py``, behind ``tinyllm train --objective``).

Every function draws its randomness from a ``numpy.random.Generator`` it is given.
"""

from tinyllm.objectives.masked_lm import IGNORE_INDEX, byte_word_ids, mask_tokens
from tinyllm.objectives.prefix_lm import prefix_lm_labels, prefix_lm_mask, sample_prefix_lengths
from tinyllm.objectives.span_corruption import (
    noise_span_counts,
    random_spans_helper,
    random_spans_noise_mask,
    reconstruct,
    span_corrupt,
)
from tinyllm.objectives.text_infilling import poisson_span_lengths, text_infill
from tinyllm.objectives.vocab import SpecialTokens

__all__ = [
    "IGNORE_INDEX", "SpecialTokens", "byte_word_ids", "mask_tokens", "noise_span_counts",
    "poisson_span_lengths", "prefix_lm_labels", "prefix_lm_mask", "random_spans_helper",
    "random_spans_noise_mask", "reconstruct", "sample_prefix_lengths", "span_corrupt",
    "text_infill",
]  # fmt: skip
