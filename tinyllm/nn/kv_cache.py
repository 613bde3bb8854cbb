"""Per-layer caches for autoregressive decoding: ``KVCache`` and ``LatentKVCache`` (MLA).

During generation each attention layer keeps what it computed for the tokens already seen,
so that a new token needs only its own projections. Every cached tensor has time on dim -2:

    KVCache         k [B, Hkv, T, D], v [B, Hkv, T, Dv]     (after RoPE, before GQA sharing)
    LatentKVCache   c_kv [B, T, R], k_rope [B, T, Dr]        (MLA: latent + shared rope key)

Bytes per token and layer (float32): KVCache 2 * Hkv * D * 4; LatentKVCache (R + Dr) * 4.

How a model's ``generate()`` uses them (one cache per layer, mutated in place):

    caches = [KVCache() for _ in model.blocks]          # or block.attn.new_cache()
    logits = model(prompt, caches=caches)               # prefill: T tokens, positions 0..T-1
    for _ in range(n_new):
        logits = model(next_token[:, None], caches=caches)  # 1 token at position len(cache)

and each attention layer calls ``attn(x, cache=caches[i])``: it reads ``len(cache)`` as the
position of its first new token, appends its new keys and values, and attends to everything
in the cache. ``crop(n)`` rolls a cache back (speculative decoding), ``reset()`` empties it.

Appending concatenates (``tinyllm.cat``): under ``no_grad`` nothing is recorded; with grad
enabled the cache stays differentiable (chunked training through a cache works). Total copy
cost over a generation is O(T^2) per layer, the same order as the attention itself.
"""

from __future__ import annotations

from tinyllm.functional import cat
from tinyllm.tensor import Tensor

__all__ = ["KVCache", "LatentKVCache"]


class _TimeCache:
    """A tuple of tensors that grow together along dim -2 (time)."""

    names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._parts: list[Tensor] | None = None

    def __len__(self) -> int:
        return 0 if self._parts is None else int(self._parts[0].shape[-2])

    @property
    def length(self) -> int:
        """Tokens held (the absolute position the next appended token gets)."""
        return len(self)

    def _append(self, *new: Tensor) -> tuple[Tensor, ...]:
        kind = type(self).__name__
        if len(new) != len(self.names):
            raise ValueError(f"{kind}.append: expected {len(self.names)} tensors {self.names}")
        T = new[0].shape[-2]
        for name, t in zip(self.names, new):
            if not isinstance(t, Tensor) or t.ndim < 2 or t.shape[-2] != T:
                raise ValueError(
                    f"{kind}.append: {name} must be a Tensor [..., T, *] with T={T} on dim -2, "
                    f"got {tuple(getattr(t, 'shape', ()))}"
                )
        if self._parts is None:
            self._parts = list(new)
        else:
            for name, old, t in zip(self.names, self._parts, new):
                if (
                    old.shape[:-2] != t.shape[:-2]
                    or old.shape[-1] != t.shape[-1]
                    or (old.dtype != t.dtype)
                ):
                    raise ValueError(
                        f"{kind}.append: {name} of shape {tuple(t.shape)} ({t.dtype}) does not "
                        f"extend the cached {tuple(old.shape)} ({old.dtype}) along dim -2"
                    )
            self._parts = [cat([old, t], dim=-2) for old, t in zip(self._parts, new)]
        return tuple(self._parts)

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` tokens."""
        if not 0 <= length <= len(self):
            raise ValueError(f"{type(self).__name__}.crop: length {length} not in [0, {len(self)}]")
        if self._parts is not None:
            self._parts = [p[..., :length, :] for p in self._parts] if length else None

    def reset(self) -> None:
        self._parts = None

    @property
    def tensors(self) -> dict[str, Tensor]:
        """The cached tensors by name (empty before the first append)."""
        return {} if self._parts is None else dict(zip(self.names, self._parts))

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached arrays."""
        return 0 if self._parts is None else sum(int(p.data.nbytes) for p in self._parts)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in self.tensors.items())
        return f"{type(self).__name__}(length={len(self)}{', ' + shapes if shapes else ''})"


class KVCache(_TimeCache):
    """Keys [B, Hkv, T, D] and values [B, Hkv, T, Dv] of one attention layer."""

    names = ("k", "v")

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new tokens' k, v (time on dim -2); return all cached (k, v)."""
        return self._append(k, v)


class LatentKVCache(_TimeCache):
    """MLA's cache: normalized latents c_kv [B, T, R] and rotated rope keys k_rope [B, T, Dr]."""

    names = ("c_kv", "k_rope")

    def append(self, c_kv: Tensor, k_rope: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new tokens' latent and rope key; return all cached (c_kv, k_rope)."""
        return self._append(c_kv, k_rope)
