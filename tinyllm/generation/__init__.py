"""Decoding: logits processors (Hugging Face's names), greedy and seeded sampling, beam
search, stop strings; the generation loop is ``LanguageModel.generate`` (models/lm.py)."""

from tinyllm.generation.beam import beam_search, model_beam_search
from tinyllm.generation.processors import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    FrequencyPresencePenaltyLogitsProcessor,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
    build_processors,
    greedy,
    sample_from_uniforms,
    seeded_uniforms,
)
from tinyllm.generation.sampling import sample_next, top_k_filter, top_p_filter
from tinyllm.generation.stop import StopStringMatcher

__all__ = [
    "EpsilonLogitsWarper",
    "EtaLogitsWarper",
    "FrequencyPresencePenaltyLogitsProcessor",
    "LogitsProcessor",
    "LogitsProcessorList",
    "MinPLogitsWarper",
    "NoBadWordsLogitsProcessor",
    "NoRepeatNGramLogitsProcessor",
    "RepetitionPenaltyLogitsProcessor",
    "StopStringMatcher",
    "TemperatureLogitsWarper",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
    "TypicalLogitsWarper",
    "beam_search",
    "build_processors",
    "greedy",
    "model_beam_search",
    "sample_from_uniforms",
    "sample_next",
    "seeded_uniforms",
    "top_k_filter",
    "top_p_filter",
]
