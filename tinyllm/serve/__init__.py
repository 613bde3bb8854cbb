"""Inference engine: paged KV cache, continuous batching, speculative decoding, and the
OpenAI-compatible server (``tinyllm serve``; FastAPI is imported only by ``server.py``)."""

from tinyllm.serve.block_allocator import BlockAllocator, OutOfBlocks
from tinyllm.serve.engine import LLMEngine, Request, SamplingParams
from tinyllm.serve.paged_cache import PagedKVCache
from tinyllm.serve.speculative import speculative_generate

__all__ = [
    "BlockAllocator",
    "LLMEngine",
    "OutOfBlocks",
    "PagedKVCache",
    "Request",
    "SamplingParams",
    "speculative_generate",
]
