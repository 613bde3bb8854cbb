"""``tinyllm graph``: draw the graph of one training step (forward and loss) of a small model.

::

    tinyllm graph                                   # attention block -> graph.dot + graph.svg
    tinyllm graph --model mlp --format png --out docs/images/graph.dot

Two tiny language models are available, both predicting the next token of random ids:

- ``attention``: token and position embeddings, a pre-norm causal self-attention sublayer
  with a residual connection (``ln_1``, ``attn.c_attn``, the fused
  ``scaled_dot_product_attention``, ``attn.c_proj``), a final LayerNorm and ``lm_head``
  (GPT-2's parameter names); uses ``tinyllm.nn.LayerNorm`` where it exists, else
  ``F.layer_norm`` with its own weight and bias;
- ``mlp``: Embedding -> Linear -> tanh -> Linear.

``--model auto`` (the default) draws the attention block, and the MLP if the attention
block cannot be built or run with this version of ``tinyllm``. The DOT text goes to
``--out``; the picture (``--format svg`` or ``png``) is written beside it, with the same name,
when Graphviz's ``dot`` program is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

MODELS = ("auto", "attention", "mlp")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "graph",
        help="draw the autograd graph of one training step of a tiny model (Graphviz)",
        description="Build a tiny model, run one forward pass and its cross-entropy loss, and "
        "draw the recorded graph: ops, shapes, saved arrays and parameters by name.",
    )
    p.add_argument("--model", choices=MODELS, default="auto", help="which model (default auto)")
    p.add_argument("--out", default="graph.dot", help="DOT file to write (default graph.dot)")
    p.add_argument(
        "--format", choices=("svg", "png"), default="svg", help="picture format (default svg)"
    )
    p.add_argument("--no-render", action="store_true", help="write the DOT text only")
    p.add_argument("--batch", type=int, default=2, help="batch size B (default 2)")
    p.add_argument("--seq", type=int, default=8, help="sequence length T (default 8)")
    p.add_argument("--vocab", type=int, default=32, help="vocabulary size V (default 32)")
    p.add_argument("--dim", type=int, default=16, help="channels C (default 16)")
    p.add_argument("--heads", type=int, default=2, help="attention heads H (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _layer_norm(dim: int):
    """``nn.LayerNorm(dim)`` where tinyllm.nn has it, else the same built on F.layer_norm."""
    from tinyllm import nn

    if hasattr(nn, "LayerNorm"):
        return nn.LayerNorm(dim)
    import tinyllm
    import tinyllm.functional as F

    class LayerNorm(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.normalized_shape = (dim,)
            self.weight = nn.Parameter(tinyllm.ones(dim))
            self.bias = nn.Parameter(tinyllm.zeros(dim))

        def forward(self, x):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, 1e-5)

    return LayerNorm(dim)


def build_attention(vocab: int, seq: int, dim: int, heads: int):
    """A one-sublayer causal attention language model [B, T] ids -> [B, T, V] logits."""
    import tinyllm
    import tinyllm.functional as F
    from tinyllm import nn

    if dim % heads:
        raise ValueError(f"tinyllm graph: --dim {dim} must be divisible by --heads {heads}")

    class CausalSelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_attn = nn.Linear(dim, 3 * dim)
            self.c_proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, T, C = x.shape
            H, D = heads, C // heads
            q, k, v = self.c_attn(x).split(C, dim=-1)  # each [B, T, C]
            q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, D]
            return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    class AttentionLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(vocab, dim)
            self.wpe = nn.Embedding(seq, dim)
            self.ln_1 = _layer_norm(dim)
            self.attn = CausalSelfAttention()
            self.ln_f = _layer_norm(dim)
            self.lm_head = nn.Linear(dim, vocab, bias=False)

        def forward(self, idx):
            positions = tinyllm.arange(idx.shape[1])
            x = self.wte(idx) + self.wpe(positions)  # [B, T, C]
            x = x + self.attn(self.ln_1(x))
            return self.lm_head(self.ln_f(x))  # [B, T, V]

    return AttentionLM()


def build_mlp(vocab: int, dim: int):
    """Embedding -> Linear -> tanh -> Linear: [B, T] ids -> [B, T, V] logits."""
    from tinyllm import nn

    class MLPLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(vocab, dim)
            self.fc1 = nn.Linear(dim, 4 * dim)
            self.fc2 = nn.Linear(4 * dim, vocab)

        def forward(self, idx):
            return self.fc2(self.fc1(self.wte(idx)).tanh())

    return MLPLM()


def training_step_loss(model, batch: int, seq: int, vocab: int, seed: int):
    """The cross-entropy loss of ``model`` on random ids (targets: the ids shifted by one)."""
    import numpy as np

    import tinyllm
    import tinyllm.functional as F

    ids = np.random.default_rng(seed).integers(0, vocab, (batch, seq + 1))
    idx, targets = tinyllm.tensor(ids[:, :-1]), tinyllm.tensor(ids[:, 1:])
    logits = model(idx)  # [B, T, V]
    return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))


def build_step(args):
    """(model name, model, loss) for ``args.model``, falling back from auto to the MLP."""
    import tinyllm

    tinyllm.manual_seed(args.seed)
    if args.model in ("auto", "attention"):
        try:
            model = build_attention(args.vocab, args.seq, args.dim, args.heads)
            return (
                "attention",
                model,
                training_step_loss(model, args.batch, args.seq, args.vocab, args.seed),
            )
        except Exception as e:
            if args.model == "attention":
                raise
            print(
                f"tinyllm graph: the attention block failed ({type(e).__name__}: {e}); "
                "drawing the MLP instead",
                file=sys.stderr,
            )
    model = build_mlp(args.vocab, args.dim)
    return "mlp", model, training_step_loss(model, args.batch, args.seq, args.vocab, args.seed)


def run(args) -> int:
    import shutil

    from tinyllm import viz
    from tinyllm.backward import topological_order

    name, model, loss = build_step(args)
    source = viz.to_dot(loss, params=model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(source)
    n_ops = len(topological_order(loss.grad_fn))
    print(
        f"{name} model, {model.num_parameters()} parameters, loss {loss.item():.4f}: "
        f"{n_ops} ops; DOT written to {out}"
    )
    if args.no_render:
        return 0
    if shutil.which("dot") is None:
        print(
            "tinyllm graph: Graphviz's `dot` program is not installed, so no picture was drawn "
            "(install it with `apt-get install graphviz` or `brew install graphviz`, or render "
            f"{out} elsewhere)"
        )
        return 0
    picture = viz.render_dot(source, out.with_suffix("." + args.format))
    print(f"picture written to {picture}")
    return 0
