"""Data parallelism (PyTorch's DDP recipe) over a ``ProcessGroup``.

Every rank holds the whole model. One optimizer step on ``size`` ranks with a per-rank batch
of B is one step on the global batch of ``size * B``:

1. at start, parameters and buffers are broadcast from rank 0 (ranks built with the same seed
   already agree; the broadcast makes it a guarantee, as DDP's constructor does);
2. every rank draws the same global batch (the samplers share a seed) and keeps its rows
   ``[rank B, (rank + 1) B)`` (``shard``);
3. after the backward (of all ``grad_accum`` micro-batches: no communication in between, as
   DDP's ``no_sync``), ``allreduce_gradients`` averages the gradients:

       g = (1 / size) sum_r g_r,   g_r = grad of the mean loss over rank r's B rows
         = grad of the mean loss over all size * B rows

   so clipping, the optimizer and the loss scaler then see exactly the one-process gradient
   (up to the order of float additions), and every rank takes the same step.

Buckets: gradients are packed, in reverse parameter order (the order a backward finishes
them, DDP's choice), into flat buffers of at most ``bucket_cap_mb`` megabytes per dtype, one
collective per bucket: few large messages instead of one per parameter. Posting all buckets
non-blocking lets their transfers overlap one another; they cannot overlap the backward
itself, because tinyllm's engine hands leaves their gradients only when the whole backward
is done (``backward.run_backward``): there is no per-parameter "gradient ready" point to
start a bucket from.

A parameter with no gradient on any rank keeps ``grad = None`` (the optimizer skips it, as
in one process); one with a gradient on some ranks only is averaged with zeros from the
others (DDP's ``find_unused_parameters`` semantics). One small flag all-reduce per step
decides which.
"""

from __future__ import annotations

import numpy as np

from tinyllm import backend
from tinyllm.distributed.process_group import ProcessGroup, init_process_group
from tinyllm.tensor import Tensor


class DataParallel:
    def __init__(self, group: ProcessGroup | None = None, bucket_cap_mb: float = 25.0) -> None:
        if bucket_cap_mb <= 0:
            raise ValueError(f"DataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.group = group if group is not None else init_process_group()
        self.bucket_bytes = int(bucket_cap_mb * 2**20)
        self.last_buckets = 0  # buckets used by the latest all-reduce (for tests and logs)

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def size(self) -> int:
        return self.group.size

    @property
    def is_main(self) -> bool:
        return self.group.is_main

    # ------------------------------------------------------------------ start
    def broadcast_state(self, module) -> None:
        """Parameters and buffers (``module.state_dict()``) from rank 0 to every rank."""
        if self.size == 1:
            return
        tensors = list(module.state_dict().values())
        buffers = []
        for t in tensors:
            xp = backend.get_array_module(t.data)
            buffers.append(xp.ascontiguousarray(t.data))
        self.group.broadcast_(buffers, root=0)
        for t, b in zip(tensors, buffers):
            if b is not t.data:
                t.data[...] = b
            t._version.value += 1

    # ------------------------------------------------------------------ data
    def global_batch_size(self, per_rank: int) -> int:
        return per_rank * self.size

    def shard(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """This rank's rows ``[rank B, (rank + 1) B)`` of global-batch arrays of ``size * B``
        rows each."""
        out = []
        for a in arrays:
            if a.shape[0] % self.size:
                raise ValueError(
                    f"DataParallel.shard: a global batch of {a.shape[0]} rows does not split "
                    f"over {self.size} ranks (shape {a.shape})"
                )
            b = a.shape[0] // self.size
            out.append(a[self.rank * b : (self.rank + 1) * b])
        return tuple(out)

    # ------------------------------------------------------------------ gradients
    def allreduce_gradients(self, params) -> None:
        """Average every parameter's ``.grad`` over the ranks, in buckets; see the module
        docstring for parameters without a gradient."""
        params = [p for p in params if p.requires_grad]
        if self.size == 1:
            return
        has = np.array([p.grad is not None for p in params], dtype=np.int32)
        self.group.allreduce_max_int_(has)
        live = [p for p, h in zip(params, has) if h]
        buckets, layout = self._pack(live[::-1])
        self.group.allreduce_sum_(buckets)
        self.last_buckets = len(buckets)
        inv = 1.0 / self.size
        for flat, members in zip(buckets, layout):
            flat *= flat.dtype.type(inv)
            offset = 0
            for p in members:
                n = p.data.size
                g = flat[offset : offset + n].reshape(p.data.shape)
                offset += n
                if p.grad is None:
                    p.grad = Tensor._from_op(g.copy(), False)
                else:
                    p.grad.data[...] = g
                    p.grad._version.value += 1

    def _pack(self, params: list) -> tuple[list, list]:
        """Flat buffers of at most ``bucket_bytes`` (a larger parameter gets its own), one
        dtype and device per bucket, in the order given."""
        buckets, layout = [], []
        current, size, key = [], 0, None
        for p in params:
            xp = backend.get_array_module(p.data)
            this_key = (p.data.dtype, xp.__name__)
            nbytes = p.data.nbytes
            if current and (this_key != key or size + nbytes > self.bucket_bytes):
                layout.append(current)
                current, size = [], 0
            current.append(p)
            size += nbytes
            key = this_key
        if current:
            layout.append(current)
        for members in layout:
            xp = backend.get_array_module(members[0].data)
            dtype = members[0].data.dtype
            parts = [
                (p.grad.data if p.grad is not None else xp.zeros(p.data.shape, dtype)).ravel()
                for p in members
            ]
            buckets.append(xp.concatenate(parts).astype(dtype, copy=False))
        return buckets, layout

    def mean(self, value):
        """The average over the ranks of a float scalar (a 0-d array, NumPy or CuPy, or a
        Python float); returned as the same kind."""
        if self.size == 1:
            return value
        if isinstance(value, float):
            buf = np.array([value], np.float64)
            self.group.allreduce_sum_([buf])
            return float(buf[0] / self.size)
        xp = backend.get_array_module(value)
        buf = xp.ascontiguousarray(xp.reshape(value, (1,)).astype(xp.float64))
        self.group.allreduce_sum_([buf])
        return (buf / self.size).reshape(value.shape).astype(value.dtype)

    def barrier(self) -> None:
        self.group.barrier()
