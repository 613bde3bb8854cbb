"""Physical KV blocks: a free list, reference counts, and a prefix-sharing index.

A block is free iff its count is 0. ``allocate`` takes one from the free list (count 1);
``share`` adds a reference (a fork, or a second request with the same prompt prefix);
``release`` drops one and returns the block to the free list at 0. Invariants the tests check
after every step: free + used = total, and sum(counts) = sum over tables of their length.

Prefix sharing: a full block of prompt tokens is named by the hash chain
key_b = (key_{b-1}, tokens of block b), so equal keys mean equal whole prefixes (hence equal
K/V). ``lookup(key)`` returns a live block with that content; ``register`` records one once
its K/V are written; a block leaves the index when it is freed.
"""

from __future__ import annotations


class OutOfBlocks(RuntimeError):
    pass


class BlockAllocator:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"BlockAllocator: num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref = [0] * num_blocks
        self.free = list(range(num_blocks - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        self.index: dict = {}  # prefix key -> block
        self.key_of: dict[int, object] = {}

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self) -> int:
        if not self.free:
            raise OutOfBlocks("BlockAllocator: no free block")
        block = self.free.pop()
        self.ref[block] = 1
        return block

    def share(self, block: int) -> int:
        if self.ref[block] <= 0:
            raise ValueError(f"BlockAllocator.share: block {block} is free")
        self.ref[block] += 1
        return block

    def release(self, block: int) -> None:
        if self.ref[block] <= 0:
            raise ValueError(f"BlockAllocator.release: block {block} is already free")
        self.ref[block] -= 1
        if self.ref[block] == 0:
            key = self.key_of.pop(block, None)
            if key is not None and self.index.get(key) == block:
                del self.index[key]
            self.free.append(block)

    def lookup(self, key) -> int | None:
        return self.index.get(key)

    def register(self, key, block: int) -> None:
        if key not in self.index:
            self.index[key] = block
            self.key_of[block] = key
