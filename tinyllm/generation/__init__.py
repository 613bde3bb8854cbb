"""Decoding: sampling filters (temperature, top-k, top-p) and the generation loop."""

from tinyllm.generation.sampling import sample_next, top_k_filter, top_p_filter

__all__ = ["sample_next", "top_k_filter", "top_p_filter"]
