"""Draw the graph that produced a tensor: Graphviz DOT text, and a picture when ``dot`` exists.

::

    import tinyllm.viz as viz
    loss = F.cross_entropy(model(x), y)
    print(viz.to_dot(loss, params=model))                 # DOT text
    viz.render(loss, "graph.svg", params=model)           # needs Graphviz's `dot` program

The picture reads top to bottom, the way the forward ran:

- a **leaf** (ellipse) for every tensor that no recorded op made: parameters (blue, labeled
  by their name when ``params`` is given), other tensors that require a gradient (yellow),
  and inputs that do not (data, targets: white, dashed);
- an **op** (box) for every recorded ``Function`` application, labeled with the Function's
  name, the shape and dtype of each output, and each array it saved for backward — named
  after the forward argument it is (``x``, ``weight``), ``output``, or ``intermediate``
  (statistics such as ``mean``/``rstd``) — with its size in bytes;
- **edges** from each input to the op that consumed it (once per argument: ``x * x`` draws
  two), from op to op, and from the last op to the **output** (green);
- the graph's caption counts the ops and the bytes of the distinct arrays saved for backward
  (an array saved by two ops is counted once).

Shapes and dtypes are written ``f32[4, 16]`` (``f32``, ``f64``, ``f16``, ``bf16``, ``i64``, ...).
After ``backward()`` the saved arrays have been freed, and the ops say so.

Only the graph's structure is read: nothing is copied, and no reference to the graph is kept
once ``to_dot`` returns.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tinyllm.backward import topological_order
from tinyllm.tensor import Tensor

__all__ = ["dtype_name", "format_bytes", "render", "render_dot", "to_dot"]

RENDER_FORMATS = ("svg", "png", "pdf")

_SHORT_DTYPES = {
    "float64": "f64",
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "uint8": "u8",
    "bool": "bool",
}

_STYLE = {
    "parameter": 'shape=ellipse, style=filled, fillcolor="lightblue"',
    "leaf": 'shape=ellipse, style=filled, fillcolor="lightyellow"',
    "input": 'shape=ellipse, style=dashed, fillcolor="white"',
    "op": 'shape=box, style="rounded,filled", fillcolor="gray92"',
    "output": 'shape=ellipse, style=filled, fillcolor="darkolivegreen1"',
}


def dtype_name(dtype: Any) -> str:
    """The short name of a dtype used in graph labels: ``f32``, ``i64``, ``bf16``, ..."""
    name = str(dtype)
    return _SHORT_DTYPES.get(name, name)


def format_bytes(n: int) -> str:
    """``n`` bytes as ``512 B``, ``1.5 KiB``, ``3.0 MiB`` or ``1.2 GiB``."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _array_label(shape: tuple, dtype: Any) -> str:
    return f"{dtype_name(dtype)}[{', '.join(str(n) for n in shape)}]"


def _quote(text: str) -> str:
    """A DOT double-quoted string; newlines become DOT's centered line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _parameter_names(params: Any) -> dict[int, str]:
    """id(parameter) -> name, from a Module, a dict, or an iterable of (name, parameter)."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters") and callable(params.named_parameters):
        pairs = params.named_parameters()
    elif isinstance(params, Mapping):
        pairs = params.items()
    elif isinstance(params, Iterable) and not isinstance(params, (str, bytes, Tensor)):
        pairs = params
    else:
        raise TypeError(
            "to_dot: params must be a Module, a dict name -> Parameter, or an iterable of "
            f"(name, Parameter) pairs such as model.named_parameters(); got {type(params).__name__}"
        )
    names = {}
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor)):
            raise TypeError(
                f"to_dot: params must yield (name, Tensor) pairs; got {type(item).__name__} "
                f"{item!r:.60}"
            )
        names.setdefault(id(item[1]), str(item[0]))
    return names


def _argument_names(fn: type, cache: dict) -> list[str]:
    """The names of ``fn.forward``'s positional arguments after ``ctx`` (for saved arrays)."""
    if fn not in cache:
        try:
            parameters = list(inspect.signature(fn.forward).parameters.values())[1:]
        except (TypeError, ValueError):
            parameters = []
        names = []
        for p in parameters:
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                break
            names.append(p.name)
        cache[fn] = names
    return cache[fn]


def _saved_lines(ctx, argument_names: list[str], seen: dict) -> list[str]:
    """One label line per array ``ctx`` saved for backward (None entries are skipped).

    Each saved array is also entered in ``seen`` (id -> bytes), so that the caption can sum
    distinct arrays: an array saved by two ops (a Tanh's output, the next Linear's input) is
    held once.
    """
    if ctx.freed:
        return ["saved: freed by backward"]
    inputs = {}
    for i, t in enumerate(ctx.inputs):
        if t is not None:
            name = argument_names[i] if i < len(argument_names) else f"input {i}"
            inputs.setdefault(id(t.data), name)
    outputs = {}
    for k, ref in enumerate(ctx.outputs):
        out = ref()
        if out is not None:
            outputs[id(out.data)] = "output" if len(ctx.outputs) == 1 else f"output {k}"
    lines = []
    for array in ctx.saved_arrays:
        if array is None:
            continue
        if not hasattr(array, "shape"):
            lines.append(f"{type(array).__name__} (not an array)")
            continue
        nbytes = int(getattr(array, "nbytes", 0))
        seen[id(array)] = nbytes
        role = inputs.get(id(array)) or outputs.get(id(array)) or "intermediate"
        lines.append(f"{role} {_array_label(array.shape, array.dtype)} {format_bytes(nbytes)}")
    if not lines:
        return ["saved: nothing"]
    return ["saved: " + lines[0], *lines[1:]]


def to_dot(tensor: Tensor, params: Any = None) -> str:
    """The graph that produced ``tensor``, as Graphviz DOT text (see the module docstring).

    ``params`` names the parameters: a Module, a dict name -> Parameter, or the pairs of
    ``model.named_parameters()``. The text lists nodes, then edges, one per line, in the
    order the forward ran; node ids are ``op0, op1, ...`` (forward order), ``leaf0, ...``
    and ``output``.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(tensor).__name__}")
    names = _parameter_names(params)
    node_lines: list[str] = []
    edge_lines: list[str] = []

    leaf_ids: dict[int, str] = {}

    def leaf_node(t: Tensor) -> str:
        if id(t) in leaf_ids:
            return leaf_ids[id(t)]
        node = f"leaf{len(leaf_ids)}"
        leaf_ids[id(t)] = node
        if id(t) in names:
            kind, title = "parameter", names[id(t)]
        elif t.requires_grad:
            kind, title = "leaf", "parameter" if _is_parameter(t) else "leaf (requires grad)"
        else:
            kind, title = "input", "input"
        label = f"{title}\n{_array_label(t.shape, t.dtype)}"
        node_lines.append(f"  {node} [label={_quote(label)}, {_STYLE[kind]}];")
        return node

    saved_arrays: dict[int, int] = {}  # id -> bytes of every distinct saved array
    order = [] if tensor.grad_fn is None else list(reversed(topological_order(tensor.grad_fn)))
    op_ids = {id(ctx): f"op{i}" for i, ctx in enumerate(order)}
    signature_cache: dict = {}
    for ctx in order:
        node = op_ids[id(ctx)]
        outputs = [_array_label(shape, dtype) for shape, dtype in ctx.output_meta]
        saved = _saved_lines(ctx, _argument_names(ctx.fn, signature_cache), saved_arrays)
        label = "\n".join([ctx.name, "out: " + ", ".join(outputs), *saved])
        node_lines.append(f"  {node} [label={_quote(label)}, {_STYLE['op']}];")
        for t in ctx.inputs:
            if t is None:
                continue
            producer = t.grad_fn
            if producer is None or id(producer) not in op_ids:
                edge_lines.append(f"  {leaf_node(t)} -> {node};")
            elif len(producer.output_meta) > 1:
                edge_lines.append(
                    f"  {op_ids[id(producer)]} -> {node} [label={_quote(f'[{t._output_index}]')}];"
                )
            else:
                edge_lines.append(f"  {op_ids[id(producer)]} -> {node};")

    output_label = f"output\n{_array_label(tensor.shape, tensor.dtype)}"
    node_lines.append(f"  output [label={_quote(output_label)}, {_STYLE['output']}];")
    if tensor.grad_fn is None:
        edge_lines.append(f"  {leaf_node(tensor)} -> output;")
    elif len(tensor.grad_fn.output_meta) > 1:
        index = _quote(f"[{tensor._output_index}]")
        edge_lines.append(f"  {op_ids[id(tensor.grad_fn)]} -> output [label={index}];")
    else:
        edge_lines.append(f"  {op_ids[id(tensor.grad_fn)]} -> output;")

    total = format_bytes(sum(saved_arrays.values()))
    caption = f"{len(order)} ops, {total} saved for backward ({len(saved_arrays)} arrays)"
    header = [
        "digraph tinyllm {",
        f"  graph [rankdir=TB, label={_quote(caption)}, labelloc=b, fontname=Helvetica];",
        "  node [fontname=Helvetica, fontsize=10];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    return "\n".join(header + node_lines + edge_lines + ["}"]) + "\n"


def _is_parameter(t: Tensor) -> bool:
    from tinyllm.nn.parameter import Parameter

    return isinstance(t, Parameter)


def render_dot(source: str, path: str | Path, format: str | None = None) -> Path:
    """Run Graphviz's ``dot`` on DOT ``source`` and write the picture to ``path``.

    ``format`` is ``svg``, ``png`` or ``pdf`` (default: ``path``'s suffix). Raises
    RuntimeError when ``dot`` is not installed, or when it fails (with its message).
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in RENDER_FORMATS:
        raise ValueError(
            f"render: cannot tell the picture format of {str(path)!r}; use a path ending in "
            f"{', '.join('.' + f for f in RENDER_FORMATS)} or pass format="
        )
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(
            "render: Graphviz's `dot` program was not found on PATH; install Graphviz "
            "(`apt-get install graphviz`, `brew install graphviz`, `conda install graphviz`), "
            "or write the text of tinyllm.viz.to_dot() to a .dot file and render it elsewhere"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [dot, f"-T{fmt}", "-o", str(path)], input=source.encode(), capture_output=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"render: `dot -T{fmt}` failed with status {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return path


def render(tensor: Tensor, path: str | Path, params: Any = None, format: str | None = None) -> Path:
    """Draw the graph that produced ``tensor`` into ``path`` (.svg, .png or .pdf) with ``dot``.

    Same arguments as ``to_dot``; raises RuntimeError with install instructions where
    Graphviz's ``dot`` program is missing. Returns the path written.
    """
    return render_dot(to_dot(tensor, params=params), path, format=format)
