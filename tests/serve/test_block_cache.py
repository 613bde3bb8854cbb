"""Block allocator and paged cache: reference counts, copy-on-write, invariants."""

import numpy as np
import pytest

from tinyllm.serve.block_allocator import BlockAllocator, OutOfBlocks
from tinyllm.serve.paged_cache import PagedKVCache


def invariants(cache):
    a = cache.allocator
    used = [b for b in range(a.num_blocks) if a.ref[b] > 0]
    assert len(used) + a.num_free == a.num_blocks
    assert sum(a.ref) == sum(len(t) for t in cache.tables.values())
    assert set(a.free).isdisjoint(b for t in cache.tables.values() for b in t)


def test_allocator_counts_and_errors():
    a = BlockAllocator(2)
    b0 = a.allocate()
    a.share(b0)
    a.release(b0)
    assert a.num_free == 1
    a.release(b0)
    assert a.num_free == 2
    with pytest.raises(ValueError, match="already free"):
        a.release(b0)
    a.allocate(), a.allocate()
    with pytest.raises(OutOfBlocks):
        a.allocate()


def test_fork_then_copy_on_write_isolates_the_children():
    cache = PagedKVCache(1, 8, 4, 1, 2, np.float64, np)
    cache.new("p")
    cache.ensure("p", 0, 6)  # two blocks, the second half full
    for t in range(6):
        b, o = cache.slots("p", [t])
        cache.K[0, b[0], 0, o[0]] = t
    cache.fork("p", "c")
    invariants(cache)
    assert cache.allocator.num_free == 6  # shared, not copied
    cache.ensure("c", 6, 7)  # the child writes into the shared last block: copied first
    b, o = cache.slots("c", [6])
    cache.K[0, b[0], 0, o[0]] = 100
    invariants(cache)
    assert cache.tables["c"][0] == cache.tables["p"][0]  # the full block stays shared
    assert cache.tables["c"][1] != cache.tables["p"][1]
    bp, op = cache.slots("p", [6])
    assert cache.K[0, bp[0], 0, op[0], 0] == 0  # the parent never sees the child's write
    for t in range(6):  # the copy carried the filled slots
        bc, oc = cache.slots("c", [t])
        assert cache.K[0, bc[0], 0, oc[0], 0] == t
    cache.free("p"), cache.free("c")
    invariants(cache)
    assert cache.allocator.num_free == 8
