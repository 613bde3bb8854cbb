"""Gradient flow: per-parameter gradient norms and update sizes over training, and their plot.

Vanishing gradients (early layers' gradient norms orders of magnitude below the last ones')
and exploding ones (norms growing step after step), and learning rates that are too large or
too small for a layer, show up at once in two numbers per parameter and step:

- ``grad_norm`` = |g|, the L2 norm of the parameter's gradient;
- ``update_ratio`` = |Δp| / |p|, where Δp is the change of the parameter made by the
  optimizer step and |p| the parameter's norm after that step. A common rule of thumb wants
  it near 1e-3: far below, the layer barely learns; far above, it is being rewritten.

The update is **measured**, not estimated: call ``before_step()`` before ``opt.step()``
(the recorder copies the parameters) and ``record(step)`` after it::

    recorder = GradFlowRecorder(model)
    for step in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step % log_every == 0:
            recorder.before_step()
        opt.step()
        if step % log_every == 0:
            for entry in recorder.record(step, lr=scheduler_lr):
                log.write(json.dumps(entry) + "\\n")

Without a ``before_step()`` snapshot, ``record`` measures the change since the previous
``record`` (over all the steps in between, which is the step's update only when recording
every step); on the very first record without a snapshot it falls back to the SGD estimate
``lr * |g|`` when ``lr`` is given, else leaves the update empty. Each entry says which it used
in ``update_source`` (``"step"``, ``"since_previous_record"``, ``"lr_times_grad"`` or None).

``plot_gradflow(log, "gradflow.png")`` draws both quantities against the step, one line per
parameter, on log scales, coloured from the first layer (dark) to the last (light), biases
dashed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tinyllm import backend
from tinyllm.tensor import Tensor

__all__ = ["GradFlowRecorder", "plot_gradflow", "read_gradflow"]

RECORD_KIND = "gradflow"
RULE_OF_THUMB_RATIO = 1e-3


def _norm(array) -> float:
    """The L2 norm of an array (NumPy or CuPy, any float dtype), computed in float64."""
    xp = backend.get_array_module(array)
    return float(xp.sqrt(xp.sum(xp.square(array.astype(xp.float64)))))


def _distance(a, b) -> float:
    """|a - b| in float64 (the update of a low-precision parameter is not rounded away)."""
    xp = backend.get_array_module(a)
    return float(xp.sqrt(xp.sum(xp.square(a.astype(xp.float64) - b.astype(xp.float64)))))


def _named_parameters(model: Any) -> list[tuple[str, Tensor]]:
    if hasattr(model, "named_parameters") and callable(model.named_parameters):
        pairs = list(model.named_parameters())
    elif isinstance(model, Mapping):
        pairs = list(model.items())
    elif isinstance(model, Iterable):
        pairs = list(model)
    else:
        raise TypeError(
            "GradFlowRecorder: expected a Module, a dict name -> Parameter or (name, Parameter) "
            f"pairs, got {type(model).__name__}"
        )
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor)):
            raise TypeError(f"GradFlowRecorder: expected (name, Tensor) pairs, got {item!r:.60}")
    pairs = [(str(name), p) for name, p in pairs if p.requires_grad]
    if not pairs:
        raise ValueError("GradFlowRecorder: the model has no parameter that requires grad")
    return pairs


class GradFlowRecorder:
    """Records gradient norm, parameter norm and update/parameter ratio per parameter.

    ``model``: a Module, a dict name -> Parameter, or (name, Parameter) pairs. Parameters
    that do not require a gradient are left out. See the module docstring for the protocol.
    """

    def __init__(self, model: Any) -> None:
        self.parameters = _named_parameters(model)
        self._snapshot: list | None = None  # parameter copies taken by before_step()
        self._previous: list | None = None  # parameter copies at the previous record()

    def before_step(self) -> None:
        """Copy the parameters now, so that the next ``record`` measures this step's update."""
        self._snapshot = [p.data.copy() for _, p in self.parameters]

    def record(self, step: int, lr: float | None = None) -> list[dict]:
        """One JSON-serializable dict per parameter for this ``step``.

        Keys: ``kind`` ("gradflow"), ``step``, ``param``, ``shape``, ``grad_norm`` (None if
        the parameter has no gradient), ``param_norm``, ``update_norm``, ``update_ratio``
        (None when unknown, or when the parameter is all zeros), ``update_source``, ``lr``.
        """
        if self._snapshot is not None:
            before, source = self._snapshot, "step"
        elif self._previous is not None:
            before, source = self._previous, "since_previous_record"
        else:
            before, source = None, None
        records = []
        for i, (name, p) in enumerate(self.parameters):
            grad_norm = None if p.grad is None else _norm(p.grad.data)
            param_norm = _norm(p.data)
            entry_source = source
            if before is not None:
                update_norm = _distance(p.data, before[i])
            elif lr is not None and grad_norm is not None:
                update_norm, entry_source = abs(lr) * grad_norm, "lr_times_grad"
            else:
                update_norm = None
            ratio = None
            if update_norm is not None and param_norm > 0:
                ratio = update_norm / param_norm
            records.append(
                {
                    "kind": RECORD_KIND,
                    "step": int(step),
                    "param": name,
                    "shape": [int(n) for n in p.shape],
                    "grad_norm": grad_norm,
                    "param_norm": param_norm,
                    "update_norm": update_norm,
                    "update_ratio": ratio,
                    "update_source": entry_source,
                    "lr": None if lr is None else float(lr),
                }
            )
        self._snapshot = None
        self._previous = [p.data.copy() for _, p in self.parameters]
        return records

    after_step = record  # reads naturally after before_step()


def read_gradflow(source: str | Path | Iterable[dict]) -> list[dict]:
    """The gradient-flow records of a JSONL log (other lines are skipped) or of a list."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"read_gradflow: no such log file {str(path)!r}")
        items = []
        with path.open() as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"read_gradflow: {path}:{number} is not JSON: {e}") from e
    else:
        items = list(source)
    return [
        r
        for r in items
        if isinstance(r, dict)
        and r.get("kind", RECORD_KIND) == RECORD_KIND
        and "param" in r
        and "step" in r
        and "grad_norm" in r
    ]


def _series(records: list[dict], key: str) -> dict[str, tuple[list, list]]:
    """param -> (steps, values) of ``key``, keeping positive finite values (log scale)."""
    series: dict[str, tuple[list, list]] = {}
    for r in records:
        steps, values = series.setdefault(r["param"], ([], []))
        value = r.get(key)
        if value is not None and math.isfinite(value) and value > 0:
            steps.append(r["step"])
            values.append(value)
    return series


def plot_gradflow(
    source: str | Path | Iterable[dict], out_png: str | Path, title: str | None = None
) -> Path:
    """Plot gradient norm and update/parameter ratio against step, one line per parameter.

    ``source`` is a JSONL log path (lines without gradient-flow records are skipped) or the
    records themselves. Both panels use a log y axis; the ratio panel marks the 1e-3 rule of
    thumb. Lines are coloured in the order the parameters first appear (first layer dark,
    last layer light); biases are dashed. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_gradflow(source)
    if not records:
        raise ValueError(
            "plot_gradflow: no gradient-flow records found (expected dicts with 'param', "
            "'step' and 'grad_norm', as GradFlowRecorder.record returns)"
        )
    names = list(dict.fromkeys(r["param"] for r in records))
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    import matplotlib

    colormap = matplotlib.colormaps["viridis"]
    panels = [
        ("grad_norm", "gradient norm |g|"),
        ("update_ratio", "update / parameter  |Δp| / |p|"),
    ]
    for ax, (key, ylabel) in zip(axes, panels):
        series = _series(records, key)
        for k, name in enumerate(names):
            steps, values = series.get(name, ([], []))
            if values:
                color = colormap(k / max(len(names) - 1, 1) * 0.9)
                style = "--" if name.split(".")[-1] == "bias" else "-"
                ax.plot(steps, values, style, color=color, linewidth=1.2, label=name)
        if key == "update_ratio":
            ax.axhline(RULE_OF_THUMB_RATIO, color="gray", linestyle="--", linewidth=1)
            ax.annotate("1e-3", (0.99, RULE_OF_THUMB_RATIO), xycoords=("axes fraction", "data"),
                        color="gray", fontsize=8, ha="right", va="bottom")  # fmt: skip
        if any(series.get(n, ([], []))[1] for n in names):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.25)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(labels) <= 24:
        figure.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)
    figure.suptitle(title or "gradient flow per parameter (first layer dark, last layer light)")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out
