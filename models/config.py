"""One configuration dataclass for the GPT and Llama families.

``arch`` picks the family's defaults; any field may override them:

| field            | gpt (GPT-2)                 | llama                              |
|------------------|-----------------------------|------------------------------------|
| positions        | learned absolute            | RoPE (half-split)                  |
| norm             | LayerNorm (with bias)       | RMSNorm                            |
| feed-forward     | GELU-tanh MLP, 4 d          | SwiGLU, int(8d/3 + 63) // 64 * 64  |
| bias             | yes                         | no                                 |
| tied embeddings  | yes                         | no                                 |
| attention heads  | MHA                         | GQA through n_kv_head              |

``rope_scaling`` (llama only): RoPE context extension, None or a dict
``{"type": "linear" | "ntk", "factor": f}`` / ``{"type": "yarn", "factor": s,
"original_max_position": L, "beta_fast": 32, "beta_slow": 1}`` (HF's ``rope_type`` and
``original_max_position_embeddings`` accepted), stored in its canonical form (every YaRN key
spelled out) so a checkpoint's ``to_dict()`` rebuilds the same tables; a config saved before
the field existed loads as None. ``tinyllm.nn.positional.set_rope_scaling`` changes it on a
built model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class ModelConfig:
    arch: str = "llama"
    vocab_size: int = 256
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    block_size: int = 128  # the longest context the model is built for (learned positions)
    ffn_hidden: int | None = None
    dropout: float = 0.0
    bias: bool | None = None
    tie_embeddings: bool | None = None
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    init_std: float = 0.02
    moe: dict | None = None  # llama: ``tinyllm.nn.moe.MoE`` arguments replacing the FFN
    rope_scaling: dict | None = None  # llama: RoPE context extension (module docstring)

    def __post_init__(self) -> None:
        if self.arch not in ("gpt", "llama"):
            raise ValueError(f"ModelConfig: arch must be 'gpt' or 'llama', got {self.arch!r}")
        gpt = self.arch == "gpt"
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.ffn_hidden is None:
            self.ffn_hidden = 4 * self.d_model if gpt else int(8 * self.d_model / 3 + 63) // 64 * 64
        if self.bias is None:
            self.bias = gpt
        if self.tie_embeddings is None:
            self.tie_embeddings = gpt
        if self.d_model % self.n_head:
            raise ValueError(
                f"ModelConfig: d_model {self.d_model} is not divisible by n_head {self.n_head}"
            )
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"ModelConfig: n_head {self.n_head} is not divisible by n_kv_head {self.n_kv_head}"
            )
        if gpt and self.moe is not None:
            raise ValueError("ModelConfig: moe (a mixture of experts) applies to llama only")
        if gpt and self.n_kv_head != self.n_head:
            raise ValueError("ModelConfig: the gpt family uses MHA (n_kv_head == n_head)")
        if self.rope_scaling is not None:
            self.rope_scaling = _check_rope_scaling(self.rope_scaling, gpt)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}")
        return cls(**values)


def _check_rope_scaling(scaling, gpt: bool) -> dict:
    """The canonical dict of a valid ``rope_scaling`` (type linear/ntk/yarn, factor >= 1,
    yarn's original_max_position given), else a ValueError naming the field."""
    from tinyllm.functional.positional import parse_rope_scaling

    if gpt:
        raise ValueError(
            "ModelConfig: rope_scaling applies to llama only (the gpt family has learned "
            f"absolute positions, no RoPE), got {scaling!r}"
        )
    if not isinstance(scaling, dict):
        raise ValueError(f"ModelConfig: rope_scaling must be a dict or None, got {scaling!r}")
    spec = parse_rope_scaling(scaling, "ModelConfig: rope_scaling")
    if spec.factor < 1:
        raise ValueError(
            f"ModelConfig: rope_scaling factor must be >= 1 (a context extension), got "
            f"{spec.factor}"
        )
    return spec.as_dict()
