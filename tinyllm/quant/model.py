"""Quantize a whole model: replace its ``Linear`` layers by ``QuantLinear``; save and load it.

``quantize_model(model, method, bits, group_size, calibration=..., forward=...)`` walks the
linear layers in module order and, for each, collects what the method needs from the
calibration data, quantizes the weight and swaps the layer (in place). Methods:

| method        | weight                               | activations          | calibration      |
|---------------|--------------------------------------|----------------------|------------------|
| rtn           | INT-b, zero-point, per group/channel | float                | none             |
| gptq          | INT-b via GPTQ (H from the inputs)   | float                | Hessian          |
| awq           | INT-b of W diag(s) after s and clip  | float (x / s)        | inputs           |
| nf4           | NF4, blocks of 64, double quant      | float                | none             |
| fp8           | FP8 E4M3/E5M2 per output row         | float                | none             |
| llm_int8      | INT8 per row                         | INT8 per token (*)   | none             |
| smoothquant   | INT8 per row of W diag(s)            | INT8 per token, x/s  | per-channel max  |
| zeroquant     | INT-b symmetric per group            | INT8 per token       | none (LKD: yes)  |

(*) the outlier feature columns (|x| >= threshold) in float. ZeroQuant with ``lkd_steps`` N > 0
first trains each transformer block's latent weights for N steps against the float block
(layer-by-layer distillation, ``tinyllm.quant.lkd``), then stores them in the same format.

With ``sequential=True`` calibrated methods run sequentially (GPTQ's ``true-sequential``): the
layers are taken in the order they compute (found by one calibration pass; BERT registers its
FFN before its attention) and the inputs of layer i are collected with layers 0..i-1 already
quantized, one pass per layer; the pass stops as soon as the layer has seen its input.
Layers named in ``exclude`` (``lm_head``, BERT's unused ``pooler`` and ``mlm_head``) stay
float, as AutoGPTQ and bitsandbytes leave the head.

Checkpoints (``save_quantized`` / ``load_quantized``): one safetensors file, written through
``tinyllm.io.checkpoint`` (atomic, no pickle). Float tensors are ``model.<name>``; each
quantized layer's arrays are ``quant.<layer>.<array>``; the JSON metadata has a ``quant``
entry with each layer's format and options.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from tinyllm import backend
from tinyllm.grad_mode import no_grad
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module, eval_mode
from tinyllm.quant.awq import awq_quantize, awq_scale_search
from tinyllm.quant.fp8 import FP8Tensor, quantize_fp8
from tinyllm.quant.gptq import HessianAccumulator, gptq_quantize
from tinyllm.quant.linear import QuantLinear
from tinyllm.quant.llm_int8 import Int8Weight, quantize_int8_rows
from tinyllm.quant.nf4 import NF4Weight, quantize_nf4
from tinyllm.quant.schemes import QuantizedWeight, quantize_weight
from tinyllm.quant.smoothquant import smooth_scales, smooth_weight

__all__ = [
    "CALIBRATED",
    "METHODS",
    "load_quantized",
    "model_nbytes",
    "quantize_model",
    "quantized_state",
    "save_quantized",
]

METHODS = ("rtn", "gptq", "awq", "nf4", "fp8", "llm_int8", "smoothquant", "zeroquant")
CALIBRATED = ("gptq", "awq", "smoothquant")
DEFAULT_EXCLUDE = ("lm_head", "pooler", "mlm_head")
_WEIGHT_TYPES = {
    "int": QuantizedWeight,
    "nf4": NF4Weight,
    "fp8": FP8Tensor,
    "int8_rows": Int8Weight,
}


class _Stop(Exception):
    """Raised by a collecting hook once its layer has seen the batch: the rest is not needed."""


def _linears(model: Module, exclude: Iterable[str]) -> list[tuple[str, Module, str]]:
    """(full name, parent, attribute) of every ``Linear`` not excluded, in module order."""
    excluded = set(exclude)
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            parts = set(full.split("."))
            if isinstance(child, Linear) and not (parts & excluded):
                found.append((full, module, child_name))
    return found


def _collect(
    model: Module,
    layers: list[Module],
    batches: Sequence,
    forward: Callable,
    sinks: list[Callable[[np.ndarray], None]],
    stop: bool,
) -> None:
    """Run the calibration batches; ``sinks[i]`` gets layer i's input rows [n, K].

    ``stop``: end each forward pass as soon as the (single) layer has seen its input.
    """

    def make_hook(layer, sink):
        original = type(layer).forward

        def hook(x, *args, **kwargs):
            sink(backend.to_numpy(x.data).reshape(-1, x.shape[-1]).astype(np.float64))
            if stop:
                raise _Stop
            return original(layer, x, *args, **kwargs)

        return hook

    _run_hooked(model, batches, forward, {layer: make_hook(layer, sink)
                                          for layer, sink in zip(layers, sinks)})  # fmt: skip


def _run_hooked(model: Module, batches: Sequence, forward: Callable, hooks: dict) -> None:
    """``forward(model, batch)`` for each batch under ``no_grad``, with ``hooks[layer]`` in
    place of each layer's forward (a hook may raise ``_Stop`` to end that pass early)."""
    for layer, hook in hooks.items():
        object.__setattr__(layer, "forward", hook)
    try:
        with no_grad():
            for batch in batches:
                try:
                    forward(model, batch)
                except _Stop:
                    pass
    finally:
        for layer in hooks:
            object.__delattr__(layer, "forward")


def _execution_order(model: Module, targets: list, batch, forward: Callable) -> list:
    """``targets`` sorted by when each layer first runs in ``forward(model, batch)``.

    Module order is registration order (BERT registers its FFN before its attention);
    true-sequential calibration must quantize in the order the layers compute. A layer the
    batch never reaches keeps its place after the others.
    """
    order: dict[int, int] = {}
    layers = [getattr(parent, attr) for _, parent, attr in targets]
    sinks = [(lambda x, i=i: order.setdefault(i, len(order))) for i in range(len(layers))]
    _collect(model, layers, [batch], forward, sinks, False)
    rank = {i: order.get(i, len(layers) + i) for i in range(len(layers))}
    return [targets[i] for i in sorted(range(len(targets)), key=rank.__getitem__)]


def _layer_stats(method: str, K: int, inputs_too: bool = False):
    """(sink, result) collecting what ``method`` needs from one layer's inputs (GPTQ with
    ``inputs_too``: the Hessian and the rows, for AWQ's scale search before GPTQ)."""
    chunks: list[np.ndarray] = []
    rows = lambda: np.concatenate(chunks) if chunks else None  # noqa: E731
    if method == "gptq":
        acc = HessianAccumulator(K)

        def sink(x):
            acc.add_batch(x)
            if inputs_too:
                chunks.append(x)

        return sink, lambda: (rows(), acc.H if acc.n else None)
    return chunks.append, lambda: (rows(), None)


def _method_defaults(method: str, bits: int, symmetric: bool | None) -> bool:
    if symmetric is not None:
        return symmetric
    return method in ("zeroquant", "smoothquant")


def quantize_linear(
    linear: Linear,
    method: str,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool | None = None,
    inputs: np.ndarray | None = None,
    hessian: np.ndarray | None = None,
    **options,
) -> QuantLinear:
    """One ``Linear`` as a ``QuantLinear`` (``inputs`` [n, K] or ``hessian`` when calibrated)."""
    if method not in METHODS:
        raise ValueError(f"quantize: method must be one of {METHODS}, got {method!r}")
    W = backend.to_numpy(linear.weight.data).astype(np.float64)
    bias = None if linear.bias is None else backend.to_numpy(linear.bias.data)
    K = W.shape[1]
    sym = _method_defaults(method, bits, symmetric)
    g = None if group_size is None or group_size <= 0 or group_size >= K else int(group_size)
    gran = "channel" if g is None else "group"
    if method == "rtn":
        return QuantLinear(quantize_weight(W, bits, gran, g, sym), bias, method="rtn")
    if method == "gptq":
        if hessian is None:
            raise ValueError("quantize: gptq needs the layer's Hessian (calibration data)")
        s = None
        if options.get("awq_scales"):
            # AWQ's scales first: GPTQ on W diag(s) whose inputs are x / s, so
            # H_s = (2/n) (X / s)^T (X / s) = diag(1/s) H diag(1/s)
            if inputs is None:
                raise ValueError("quantize: gptq with awq_scales needs the layer's inputs")
            s, _, _ = awq_scale_search(W, inputs, bits, g, sym)
            W, hessian = W * s, hessian / np.outer(s, s)
        qw, _ = gptq_quantize(
            W, hessian, bits, g, sym,
            blocksize=options.get("blocksize", 128),
            percdamp=options.get("percdamp", 0.01),
            act_order=options.get("act_order", False),
        )  # fmt: skip
        return QuantLinear(qw, bias, input_scale=s, method="gptq")
    if method == "awq":
        if inputs is None:
            raise ValueError("quantize: awq needs the layer's inputs (calibration data)")
        qw, s, _ = awq_quantize(W, inputs, bits, g, sym, clip=options.get("clip", True))
        return QuantLinear(qw, bias, input_scale=s, method="awq")
    if method == "nf4":
        blocksize = options.get("blocksize", 64)
        qw = quantize_nf4(W.astype(np.float32), blocksize, options.get("double_quant", True))
        return QuantLinear(qw, bias, method="nf4")
    if method == "fp8":
        qw = quantize_fp8(W, options.get("fmt", "e4m3"), "channel")
        return QuantLinear(qw, bias, method="fp8")
    if method == "llm_int8":
        qw = quantize_int8_rows(W)
        return QuantLinear(qw, bias, threshold=options.get("threshold", 6.0), method="llm_int8")
    if method == "zeroquant":
        qw = quantize_weight(W, bits, gran, g, True)
        return QuantLinear(qw, bias, act_quant="token", method="zeroquant")
    # smoothquant: W8A8 on the smoothed layer
    if inputs is None:
        raise ValueError("quantize: smoothquant needs per-channel activation maxima (calibration)")
    act_absmax = np.abs(inputs).max(axis=0)
    s = smooth_scales(act_absmax, W, options.get("alpha", 0.5))
    qw = quantize_weight(smooth_weight(W, s), bits, gran, g, True)
    act = options.get("act_quant", "token")
    static = float(np.abs(inputs / s).max()) if act == "tensor" else None
    return QuantLinear(qw, bias, input_scale=s, act_quant=act, act_absmax=static,
                       method="smoothquant")  # fmt: skip


def quantize_model(
    model: Module,
    method: str = "rtn",
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool | None = None,
    calibration: Sequence | None = None,
    forward: Callable | None = None,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    max_rows: int = 4096,
    sequential: bool = False,
    progress: Callable[[str], None] | None = None,
    layer_bits: dict[str, int] | None = None,
    **options,
) -> Module:
    """Replace the model's linear layers by quantized ones, in place; returns the model.
    Each packed layer is put on the device of the layer it replaces.

    ``calibration``: a sequence of batches; ``forward(model, batch)`` runs one (default:
    ``model(batch)``). Needed by gptq, awq, smoothquant. ``max_rows``: at most this many
    input rows per layer are kept for awq/smoothquant (a fixed-seed subsample; GPTQ's
    Hessian uses all rows). ``sequential``: collect layer i's inputs with layers 0..i-1
    already quantized (one pass per layer, GPTQ's true-sequential); otherwise one pass on
    the float model for all layers. ``options``: lkd_steps, lkd_lr, lkd_progress_bar
    (zeroquant: layer-by-layer distillation of each block first, ``tinyllm.quant.lkd``),
    blocksize, percdamp, act_order, awq_scales (gptq; awq_scales: AWQ's scale search, then
    GPTQ on W diag(s)), clip (awq), double_quant, blocksize (nf4), fmt (fp8), threshold
    (llm_int8), alpha, act_quant (smoothquant). The layers are taken in compute order when
    ``sequential`` (one extra calibration pass records it).
    ``layer_bits``: {pattern: bits} for a mixed configuration; a layer whose full name matches
    a pattern (``fnmatch``: "layers.5.*.dense") is quantized to that many bits instead.
    """
    if method not in METHODS:
        raise ValueError(f"quantize_model: method must be one of {METHODS}, got {method!r}")
    if method in CALIBRATED and not calibration:
        raise ValueError(f"quantize_model: {method} needs calibration batches")
    forward = forward or (lambda m, batch: m(batch))
    lkd_steps = int(options.pop("lkd_steps", 0) or 0)
    if lkd_steps < 0:
        raise ValueError(f"quantize_model: lkd_steps must be >= 0, got {lkd_steps}")
    if lkd_steps and (layer_bits or tuple(exclude) != tuple(DEFAULT_EXCLUDE)):
        raise ValueError("quantize_model: lkd_steps quantizes every block linear layer at "
                         "`bits`; layer_bits and exclude are not supported with it")  # fmt: skip
    for pattern, b in (layer_bits or {}).items():
        if not isinstance(b, (int, np.integer)) or not 1 <= b <= 8:
            raise ValueError(f"quantize_model: layer_bits[{pattern!r}] must be 1..8, got {b!r}")
    lkd_lr = float(options.pop("lkd_lr", 1e-4))
    lkd_bar = bool(options.pop("lkd_progress_bar", False))
    if lkd_steps > 0:
        _zeroquant_lkd(model, method, bits, group_size, calibration, forward, lkd_steps, lkd_lr,
                       progress, lkd_bar)  # fmt: skip
    with eval_mode(model):
        rng = np.random.default_rng(0)
        targets = _linears(model, exclude)
        stats = {}
        inputs_too = bool(options.get("awq_scales"))

        def bits_of(name: str) -> int:
            for pattern, b in (layer_bits or {}).items():
                if fnmatch.fnmatchcase(name, pattern):
                    return int(b)
            return bits

        if method in CALIBRATED and sequential:
            targets = _execution_order(model, targets, calibration[0], forward)
        if method in CALIBRATED and not sequential:
            for name, parent, attr in targets:
                stats[name] = _layer_stats(method, getattr(parent, attr).in_features, inputs_too)
            layers = [getattr(parent, attr) for _, parent, attr in targets]
            _collect(
                model, layers, calibration, forward, [stats[n][0] for n, _, _ in targets], False
            )
        for name, parent, attr in targets:
            linear = getattr(parent, attr)
            inputs = hessian = None
            if method in CALIBRATED:
                if sequential:
                    stats[name] = _layer_stats(method, linear.in_features, inputs_too)
                    _collect(model, [linear], calibration, forward, [stats[name][0]], True)
                inputs, hessian = stats.pop(name)[1]()
                if inputs is not None and inputs.shape[0] > max_rows:
                    keep = rng.choice(inputs.shape[0], max_rows, replace=False)
                    inputs = inputs[np.sort(keep)]
            if method in CALIBRATED and inputs is None and hessian is None:
                # the calibration never reaches this layer: fall back to round-to-nearest
                q = quantize_linear(linear, "rtn", bits_of(name), group_size, symmetric)
            else:
                q = quantize_linear(linear, method, bits_of(name), group_size, symmetric, inputs,
                                    hessian, **options)  # fmt: skip
            setattr(parent, attr, q.to(linear.weight.device))  # where the float layer was
            if progress is not None:
                progress(name)
    return model


def _zeroquant_lkd(model, method, bits, group_size, calibration, forward, steps, lr, progress,
                   bar=False):  # fmt: skip
    """ZeroQuant's LKD on the model's transformer blocks (``.blocks``, or BERT's ``.layers``)."""
    from tinyllm.quant.lkd import lkd_quantize

    if method != "zeroquant":
        raise ValueError(f"quantize_model: lkd_steps is ZeroQuant's LKD, not for {method!r}")
    if not calibration:
        raise ValueError("quantize_model: zeroquant with lkd_steps > 0 needs calibration batches")
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        blocks = getattr(model, "layers", None)
    if blocks is None:
        raise ValueError(
            f"quantize_model: LKD needs the model's transformer blocks (.blocks or .layers); "
            f"{type(model).__name__} has neither"
        )
    lkd_quantize(model, list(blocks), calibration, forward, bits, group_size, steps=steps,
                 lr=lr, progress=progress, show_progress=bar)  # fmt: skip


def model_nbytes(model: Module) -> int:
    """Bytes of the model's weights: float parameters and buffers plus the quantized layers."""
    total = 0
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.data.nbytes
    for m in model.modules():
        # a QuantLinear's stored weight counts once (its ``nbytes``): not its kernel operands,
        # buffers that view or decode it (``QuantLinear.PACKED_BUFFERS``, ``inv_input_scale``)
        quant = isinstance(m, QuantLinear)
        if quant:
            total += m.nbytes - (m.bias.data.nbytes if m.bias is not None else 0)
        for name, b in m._buffers.items():
            if b is None or (quant and name != "bias"):
                continue
            total += b.data.nbytes
    return int(total)


# ---------------------------------------------------------------- checkpoints
def quantized_state(model: Module) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, quant metadata) of a quantized model, as ``save_quantized`` writes them."""
    arrays = {f"model.{k}": backend.to_numpy(v.data) for k, v in model.state_dict().items()}
    layers = {}
    for name, m in model.named_modules():
        if not isinstance(m, QuantLinear):
            continue
        for key, value in m.qweight.arrays().items():
            arrays[f"quant.{name}.{key}"] = np.ascontiguousarray(value)
        if m.input_scale is not None:
            arrays[f"quant.{name}.input_scale"] = m.input_scale
        layers[name] = {
            "weight": m.qweight.meta(),
            "method": m.method,
            "act_quant": m.act_quant,
            "act_absmax": m.act_absmax,
            "threshold": m.threshold,
            "input_scale": m.input_scale is not None,
        }
    return arrays, {"layers": layers}


def save_quantized(model: Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the quantized model to ``path`` (a safetensors file, atomically); ``metadata`` is
    kept. A model whose ``config`` has ``to_dict`` (``ModelConfig``, ``MambaConfig``, ...) also
    gets ``model_config`` -- as ``tinyllm train`` writes it -- unless ``metadata`` has one:
    ``load_quantized`` rebuilds the model from it (RoPE scaling and context included)."""
    from tinyllm.io.checkpoint import save_checkpoint

    arrays, quant = quantized_state(model)
    meta = dict(metadata or {})
    meta["quant"] = {**meta.get("quant", {}), **quant}
    config = getattr(model, "config", None)
    if "model_config" not in meta and hasattr(config, "to_dict"):
        meta["model_config"] = config.to_dict()
    return save_checkpoint(path, arrays, meta)


def apply_quantized_state(model: Module, arrays: dict[str, np.ndarray], quant: dict) -> Module:
    """Swap the layers named in ``quant["layers"]`` for QuantLinear and load every array."""
    from tinyllm.io.checkpoint import CheckpointError

    modules = dict(model.named_modules())
    for name, spec in quant["layers"].items():
        parent_name, _, attr = name.rpartition(".")
        parent = modules.get(parent_name)
        if parent is None or not hasattr(parent, attr):
            raise CheckpointError(f"quantized layer {name!r} is not in the model")
        wmeta = spec["weight"]
        prefix = f"quant.{name}."
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        weight = _WEIGHT_TYPES[wmeta["kind"]].from_arrays(own, wmeta)
        bias = arrays.get(f"model.{name}.bias")
        layer = QuantLinear(
            weight,
            bias,
            input_scale=own.get("input_scale") if spec.get("input_scale") else None,
            act_quant=spec.get("act_quant"),
            act_absmax=spec.get("act_absmax"),
            threshold=spec.get("threshold"),
            method=spec.get("method", "rtn"),
        )
        setattr(parent, attr, layer)
    state = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"the quantized checkpoint does not fit the model: {exc}") from exc
    model.eval()
    return model


def load_quantized(run_dir: str | Path) -> Module:
    """The quantized model of a folder written by ``tinyllm quantize`` (a Llama/GPT run or a
    quantized MiniLM), in eval mode.

    The model is built from the checkpoint's ``model_config`` (the quantized model's own
    configuration: a RoPE scaling and its context come back); a file written before
    ``tinyllm quantize`` saved it is built from the run's config.json and ``vocab_size``.
    ``model(idx)`` runs the packed layers (and their activation quantization);
    ``model.generate`` decodes with the lean decoder, which calls each quantized layer's own
    forward (an LLM.int8() model decodes by the uncached forward instead;
    tests/quant/test_sampling_path.py)."""
    from tinyllm.io.checkpoint import CheckpointError, load_checkpoint

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise FileNotFoundError(f"load_quantized: {ckpt} does not exist")
    arrays, meta = load_checkpoint(ckpt)
    if "quant" not in meta:
        raise CheckpointError(f"load_quantized: {ckpt} is not a quantized checkpoint")
    if meta.get("arch") == "bert":
        from tinyllm.models.bert import BertConfig, BertModel

        model = BertModel(BertConfig.from_dict(meta["bert_config"]))
    elif meta.get("model_config") is not None:
        from tinyllm.models import from_config

        try:
            model = from_config(meta["model_config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"load_quantized: {ckpt} has a bad model_config: {exc}") from exc
    else:
        from tinyllm.models import build_model
        from tinyllm.train.config import TrainConfig
        from tinyllm.train.loop import model_config_for

        config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        model = build_model(model_config_for(config, int(meta["vocab_size"])))
    return apply_quantized_state(model, arrays, meta["quant"])
