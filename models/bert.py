"""BERT encoder (Devlin et al. 2019): learned positions, post-LN blocks, exact GELU, MLM head.

Shapes: B batch, T tokens, C = hidden_size, H heads, D = C / H, F = intermediate_size,
V = vocab_size. ``m`` is the attention mask [B, T] (1 = token, 0 = padding).

    x   = LN_emb(word[ids] + position[0..T-1] + token_type[types])        [B, T, C]
    for each of the L layers (post-LN: the norm comes after each residual sum):
        a = Attention(x; keys with m = 0 hidden)                           [B, T, C]
        x = LN_attn(x + a)
        f = W_out gelu(W_in x + b_in) + b_out                              [B, T, F] -> [B, T, C]
        x = LN_out(x + f)
    hidden = x                                                            [B, T, C]

Attention is bidirectional (no causal mask): softmax(q k^T / sqrt(D) + mask) v per head, with
padded keys masked out (-inf), so a padded row computes exactly what the unpadded sequence
does at its real positions. Dropout (hidden and attention probabilities) acts in training only.

Heads on top of ``hidden``:

    pooler:  pooled = tanh(W_p hidden[:, 0] + b_p)                         [B, C]  ([CLS])
    MLM:     logits = LN(gelu(W_t hidden + b_t)) word^T + b_dec            [B, T, V]
             (the decoder weight is the word-embedding table itself: tied)

Both heads always exist. A checkpoint that lacks them (all-MiniLM-L6-v2 carries the pooler but
not the MLM head) leaves them at their random initialisation; ``models/pretrained.py`` maps
Hugging Face parameter names onto the names here and reports what it did not find.

Each layer reuses ``tinyllm.nn.Attention`` (``causal=False``, biases on): one GEMM per
projection, then the fused ``F.scaled_dot_product_attention`` with a bool padding mask
[B, 1, 1, T] (True = attend), which the fused path takes inside its softmax kernel. A batch
without padding passes no mask at all.

Skipping padding (``forward(..., skip_padding=True)``, what ``tinyllm.embeddings`` uses):
every op but attention acts on each token alone, and no real token reads a padded one
(padded keys are hidden), so the layers run on the N real tokens only, as rows [N, C]:

    h = x[real]                                       [N, C]       (real: flat positions)
    per layer:  q, k, v = (h W^T + b)[gather] -> [B, H, T, D]      (gather: [B*T] -> rows)
                o = Attention(q, k, v; padding mask)[real]          [N, C]
                h = LN(h + o W_o^T + b_o);  h = LN(h + W_out gelu(W_in h + b_in) + b_out)
    hidden = h at the real positions, 0 at the padded ones          [B, T, C]

``gather`` sends each padded position to row 0: its query's output is dropped and its key
is hidden, so what it holds is never read (and its gradient is 0). The real positions'
hidden states equal the padded computation's up to float rounding; the padded positions
are 0 instead of the (meaningless) values a padded forward gives them. The linear layers,
GELU and LayerNorms then cost N rows instead of B T.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

import tinyllm.functional as F
from tinyllm.backend import get_array_module
from tinyllm.functional.attention import packed_attention
from tinyllm.grad_mode import is_grad_enabled, no_grad
from tinyllm.nn import Dropout, Embedding, Linear, Module, ModuleList, Parameter, init
from tinyllm.nn.attention import Attention
from tinyllm.nn.normalization import LayerNorm
from tinyllm.tensor import Tensor

__all__ = [
    "BertConfig",
    "BertEmbeddings",
    "BertLayer",
    "BertMLMHead",
    "BertModel",
    "BertPooler",
    "padding_mask",
]

# Hugging Face's names for the activation (``hidden_act``) -> F.gelu's ``approximate``
_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass
class BertConfig:
    """Hyper-parameters of a BERT encoder, named as in Hugging Face's ``config.json``.

    The defaults are those of all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads).
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    position_embedding_type: str = "absolute"

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"BertConfig: {name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"BertConfig: hidden_act must be one of {sorted(_ACTIVATIONS)}, "
                f"got {self.hidden_act!r}"
            )
        if self.position_embedding_type != "absolute":
            raise ValueError(
                "BertConfig: only position_embedding_type='absolute' is supported, "
                f"got {self.position_embedding_type!r}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig: {name} must be in [0, 1), got {getattr(self, name)}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: dict) -> BertConfig:
        """From a Hugging Face config dict; keys this model does not use are ignored.

        A ``model_type`` other than "bert" is refused (its weights would not fit).
        """
        if not isinstance(data, dict):
            raise TypeError(f"BertConfig.from_dict: expected a dict, got {type(data).__name__}")
        model_type = data.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"BertConfig.from_dict: model_type is {model_type!r}, not 'bert'")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        """From a Hugging Face ``config.json``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"BertConfig.from_json_file: no such file: {path}") from None
        except json.JSONDecodeError as error:
            raise ValueError(
                f"BertConfig.from_json_file: {path} is not valid JSON: {error}"
            ) from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return {"model_type": "bert", **asdict(self)}


def padding_mask(attention_mask) -> np.ndarray | None:
    """The bool key mask [B, 1, 1, T] (True = attend) of an attention mask [B, T] of 0/1, or
    None when nothing is padded (then attention needs no mask)."""
    m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
    xp = get_array_module(m)
    m = xp.asarray(m)
    if m.ndim != 2:
        raise ValueError(f"BertModel: attention_mask must be [B, T], got shape {tuple(m.shape)}")
    keep = m != 0
    if bool(keep.all()):
        return None
    return keep[:, None, None, :]


def _ids(name: str, value, upper: int, shape: tuple | None = None) -> Tensor:
    """``value`` as an int Tensor [B, T] with entries in [0, upper) (Tensor, array or lists)."""
    if not isinstance(value, Tensor):
        value = Tensor(value if hasattr(value, "shape") else np.asarray(value))
    t = value
    if t.dtype.kind not in "iu":
        raise TypeError(f"BertModel: {name} must hold integers, got dtype {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"BertModel: {name} must be [B, T], got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"BertModel: {name} has shape {tuple(t.shape)}, input_ids has {tuple(shape)}"
        )
    if t.numel() and (int(t.data.min()) < 0 or int(t.data.max()) >= upper):
        raise ValueError(
            f"BertModel: {name} must lie in [0, {upper}), got values in "
            f"[{int(t.data.min())}, {int(t.data.max())}]"
        )
    return t


class BertEmbeddings(Module):
    """x = LN(word[ids] + position[t] + token_type[types]), then dropout: [B, T] -> [B, T, C]."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        C = config.hidden_size
        self.word_embeddings = Embedding(config.vocab_size, C, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, C)
        self.token_type_embeddings = Embedding(config.type_vocab_size, C)
        self.norm = LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        T = input_ids.shape[1]
        xp = get_array_module(input_ids.data)
        positions = Tensor(xp.arange(T))  # [T]
        x = (
            self.word_embeddings(input_ids)  # [B, T, C]
            + self.position_embeddings(positions)  # [T, C], broadcast over B
            + self.token_type_embeddings(token_type_ids)  # [B, T, C]
        )
        return self.dropout(self.norm(x))


class BertLayer(Module):
    """One post-LN encoder block: x = LN(x + Attn(x)); x = LN(x + W_out gelu(W_in x)).

    forward(x [B, T, C], mask [B, 1, 1, T] bool or None) -> [B, T, C].
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        C, F_ = config.hidden_size, config.intermediate_size
        self.attention = Attention(
            C,
            config.num_attention_heads,
            bias=True,
            dropout=config.attention_probs_dropout_prob,
            causal=False,
        )
        self.attention_norm = LayerNorm(C, eps=config.layer_norm_eps)
        self.intermediate = Linear(C, F_)
        self.output = Linear(F_, C)
        self.output_norm = LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.approximate = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor, mask=None) -> Tensor:
        a = self.attention(x, attn_mask=mask)  # [B, T, C]
        x = self.attention_norm(x + self.dropout(a))
        h = F.gelu(self.intermediate(x), approximate=self.approximate)  # [B, T, F]
        return self.output_norm(x + self.dropout(self.output(h)))

    def _records(self, h: Tensor) -> bool:
        """Whether ops on h and this layer's parameters record a graph for backward."""
        return is_grad_enabled() and (
            h.requires_grad or any(p.requires_grad for p in self.parameters())
        )

    def forward_packed(self, h: Tensor, shape: tuple, mask, real, gather, lengths=None) -> Tensor:
        """The same block on the real tokens only: h [N, C] -> [N, C].

        ``shape`` = (B, T); ``mask`` [B, 1, 1, T] bool; ``real`` [N] the flat positions of
        the real tokens in [B*T]; ``gather`` [B*T] the row of h each position reads (row 0
        for padded positions, whose values are never read; see the module docstring).
        ``lengths`` [B] (real tokens per sequence): in eval mode when no gradient is
        recorded, attention runs per sequence on the rows themselves (``packed_attention``),
        not on [B, H, T, D].
        """
        B, T = shape
        att = self.attention
        H, D = att.n_heads, att.head_dim
        if lengths is not None and not self.training and not self._records(h):
            # inference: attention per sequence on the packed rows, no padded layout at all
            q, k, v = att.q_proj(h), att.k_proj(h), att.v_proj(h)  # [N, C] each
            o = packed_attention(q, k, v, lengths, H, scale=att.scale)  # [N, C]
            h = self.attention_norm(h + att.o_proj(o))
            f = F.gelu(self.intermediate(h), approximate=self.approximate)  # [N, F]
            return self.output_norm(h + self.output(f))

        def heads(proj):  # [N, C] -> rows [B*T, H*D] -> [B, H, T, D]
            return proj(h)[gather].reshape(B, T, H, D).transpose(1, 2)

        q, k, v = heads(att.q_proj), heads(att.k_proj), heads(att.v_proj)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=att.dropout if self.training else 0.0,
            scale=att.scale,
        )  # fmt: skip
        o = o.transpose(1, 2).reshape(B * T, H * D)[real]  # [N, C]: real queries only
        h = self.attention_norm(h + self.dropout(att.o_proj(o)))
        f = F.gelu(self.intermediate(h), approximate=self.approximate)  # [N, F]
        return self.output_norm(h + self.dropout(self.output(f)))


class BertPooler(Module):
    """pooled = tanh(W hidden[:, 0] + b): the [CLS] vector, [B, T, C] -> [B, C]."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.tanh(self.dense(hidden[:, 0]))


class BertMLMHead(Module):
    """logits = LN(gelu(W_t h + b_t)) E^T + bias, E the (tied) word-embedding table [V, C].

    forward(hidden [B, T, C]) -> logits [B, T, V]. ``decoder_weight`` is the embedding
    Parameter itself (not registered here, so the state dict holds it once).
    """

    def __init__(self, config: BertConfig, word_embeddings: Embedding) -> None:
        super().__init__()
        C, V = config.hidden_size, config.vocab_size
        self.transform = Linear(C, C)
        self.norm = LayerNorm(C, eps=config.layer_norm_eps)
        xp = get_array_module(word_embeddings.weight.data)
        self.bias = Parameter(xp.zeros(V, dtype=word_embeddings.weight.dtype))
        self.approximate = _ACTIVATIONS[config.hidden_act]
        object.__setattr__(self, "_word_embeddings", word_embeddings)  # tied, not a child

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.norm(F.gelu(self.transform(hidden), approximate=self.approximate))
        return F.linear(h, self._word_embeddings.weight, self.bias)  # [B, T, V]


class BertModel(Module):
    """A BERT encoder with a pooler and a masked-language-model head.

    forward(input_ids [B, T], attention_mask [B, T] = None, token_type_ids [B, T] = None)
    -> hidden states [B, T, C] (the last layer's, what sentence-transformers pools).
    ``pool(hidden)`` -> [B, C] and ``mlm_logits(hidden)`` -> [B, T, V] apply the heads.

    Parameter names: ``embeddings.{word,position,token_type}_embeddings.weight``,
    ``embeddings.norm``, ``layers.{i}.attention.{q,k,v,o}_proj``, ``layers.{i}.attention_norm``,
    ``layers.{i}.intermediate``, ``layers.{i}.output``, ``layers.{i}.output_norm``,
    ``pooler.dense``, ``mlm_head.{transform,norm,bias}`` (see ``models/pretrained.py`` for
    the Hugging Face names they come from).

    Initialisation is BERT's: weights N(0, initializer_range^2), biases 0, LayerNorm 1 and 0.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"BertModel: config must be a BertConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = BertPooler(config)
        self.mlm_head = BertMLMHead(config, self.embeddings.word_embeddings)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (Linear, Embedding)):
                init.normal_(module.weight, 0.0, std)
            if isinstance(module, Linear) and module.bias is not None:
                init.zeros_(module.bias)
            if isinstance(module, Embedding) and module.padding_idx is not None:
                with no_grad():
                    module.weight.data[module.padding_idx] = 0
        init.zeros_(self.mlm_head.bias)  # LayerNorms keep their ones and zeros

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, *, skip_padding: bool = False
    ) -> Tensor:
        """Hidden states [B, T, C] of the last layer.

        ``skip_padding=True``: the layers run on the real tokens only (see the module
        docstring); padded positions of the result are 0, real ones equal the default's up
        to float rounding. Faster on padded batches; what sentence embeddings use.
        """
        input_ids = _ids("input_ids", input_ids, self.config.vocab_size)
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"BertModel: {T} tokens exceed max_position_embeddings "
                f"{self.config.max_position_embeddings}; truncate the input"
            )
        if token_type_ids is None:
            xp = get_array_module(input_ids.data)
            token_type_ids = Tensor(xp.zeros((B, T), dtype=input_ids.dtype))
        else:
            token_type_ids = _ids(
                "token_type_ids", token_type_ids, self.config.type_vocab_size, (B, T)
            )
        mask = None
        if attention_mask is not None:
            am = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            if tuple(np.shape(am)) != (B, T):
                raise ValueError(
                    f"BertModel: attention_mask has shape {tuple(np.shape(am))}, "
                    f"input_ids has {(B, T)}"
                )
            mask = padding_mask(am)  # [B, 1, 1, T] bool, or None without padding
        x = self.embeddings(input_ids, token_type_ids)  # [B, T, C]
        if skip_padding and mask is not None:
            return self._forward_packed(x, mask)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def _forward_packed(self, x: Tensor, mask) -> Tensor:
        """The layers on the real tokens of x [B, T, C] (mask [B, 1, 1, T]); 0 at padding."""
        B, T, C = x.shape
        xp = get_array_module(x.data)
        real = xp.flatnonzero(mask.reshape(B * T))  # [N] flat positions of real tokens
        N = int(real.shape[0])
        if N == 0:  # nothing real: every output row is padding
            return Tensor(xp.zeros((B, T, C), dtype=x.dtype))
        rows = xp.zeros(B * T, dtype=np.int64)  # padded positions read row 0 (never used)
        rows[real] = xp.arange(N)
        h = x.reshape(B * T, C)[real]  # [N, C]
        lengths = mask.reshape(B, T).sum(axis=1)  # [B] real tokens per sequence
        for layer in self.layers:
            h = layer.forward_packed(h, (B, T), mask, real, rows, lengths)
        # hidden [B, T, C]: the real rows, and a zero row (index N) at the padded positions
        rows = xp.full(B * T, N, dtype=np.int64)  # a new array: backward keeps the first
        rows[real] = xp.arange(N)
        zero = Tensor(xp.zeros((1, C), dtype=h.dtype))
        return F.cat([h, zero])[rows].reshape(B, T, C)

    def pool(self, hidden: Tensor) -> Tensor:
        """BERT's pooled output tanh(W hidden[:, 0] + b): [B, T, C] -> [B, C]."""
        return self.pooler(hidden)

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Masked-LM logits from the hidden states: [B, T, C] -> [B, T, V]."""
        return self.mlm_head(hidden)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
            f"heads={c.num_attention_heads}, vocab={c.vocab_size}"
        )
