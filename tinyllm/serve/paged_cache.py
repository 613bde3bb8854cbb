"""The paged KV cache: per-layer block pools and one block table per sequence.

    K, V   [n_layer, num_blocks, Hkv, S, D]
    table[seq]  list of physical block ids; token t at (table[t // S], t % S)

``ensure(seq, length)`` makes room for ``length`` tokens, allocating blocks as needed and
copying on write: a sequence about to write into a block that another table also references
(count > 1) first gets a private copy of it. ``fork(parent, child)`` shares every block of the
parent (copy-on-write then isolates the two), as parallel samples and beams do.
"""

from __future__ import annotations

from tinyllm.serve.block_allocator import BlockAllocator, OutOfBlocks


class PagedKVCache:
    def __init__(self, n_layer, num_blocks, block_size, n_kv_head, head_dim, dtype, xp):
        self.S, self.xp = block_size, xp
        shape = (n_layer, num_blocks, n_kv_head, block_size, head_dim)
        self.K = xp.zeros(shape, dtype)
        self.V = xp.zeros(shape, dtype)
        self.allocator = BlockAllocator(num_blocks)
        self.tables: dict[object, list[int]] = {}
        self.copies = 0  # copy-on-write block copies so far

    def blocks_needed(self, length: int) -> int:
        return -(-length // self.S)

    def new(self, seq, shared_blocks: list[int] | None = None) -> None:
        self.tables[seq] = [self.allocator.share(b) for b in (shared_blocks or [])]

    def ensure(self, seq, start: int, length: int) -> None:
        """Room for tokens start .. length - 1 (to be written): new blocks, and private copies
        of shared blocks in that range. Raises OutOfBlocks (nothing allocated) if short."""
        table, alloc = self.tables[seq], self.allocator
        need_new = max(0, self.blocks_needed(length) - len(table))
        first = start // self.S
        cow = [b for b in range(first, min(len(table), self.blocks_needed(length)))
               if alloc.ref[table[b]] > 1]  # fmt: skip
        if need_new + len(cow) > alloc.num_free:
            raise OutOfBlocks(f"PagedKVCache: {need_new + len(cow)} blocks needed, "
                              f"{alloc.num_free} free")  # fmt: skip
        for b in cow:
            old, new = table[b], alloc.allocate()
            self.K[:, new] = self.K[:, old]
            self.V[:, new] = self.V[:, old]
            alloc.release(old)
            table[b] = new
            self.copies += 1
        for _ in range(need_new):
            table.append(alloc.allocate())

    def fork(self, parent, child) -> None:
        self.tables[child] = [self.allocator.share(b) for b in self.tables[parent]]

    def free(self, seq) -> None:
        for b in self.tables.pop(seq):
            self.allocator.release(b)

    def slots(self, seq, positions):
        """(blocks, offsets) of the given token positions of ``seq``."""
        table = self.tables[seq]
        return [table[p // self.S] for p in positions], [p % self.S for p in positions]


__all__ = ["PagedKVCache", "OutOfBlocks"]
