"""ZeroQuant's layer-by-layer knowledge distillation (LKD; Yao et al., NeurIPS 2022, sec. 4).

The model is quantized one block (transformer layer) at a time. For block l, with X_l the
block's input in the *float* model (the teacher) on calibration data, the student is the same
block whose linear layers compute with fake-quantized weights and INT8 token-wise activations,

    y = Q_a(x) Q_w(W_latent)^T + b,   Q_w: symmetric INT-b per (row, group) of g columns,
                                      scale s = max|W_latent[row, group]| / (2^(b-1) - 1)
                                      recomputed from the latent weight at every step,
                                      Q_a: per-token absmax INT8 (dynamic, as at inference),

and only the float "latent" weights W_latent (initialised to W) are trained, with Adam, on

    L_l = mean (block_student(X_l) - block_teacher(X_l))^2          (no labels)

Rounding has derivative 0 almost everywhere, so both quantizers pass the gradient straight
through (STE): dL/dW_latent = dL/dQ_w(W_latent) wherever the code is not clamped (with an
absmax scale nothing is clamped). The next block trains on the teacher's stream:
X_{l+1} = block_teacher(X_l), computed before block l is replaced, so only one block and one
set of activations are held at a time. After training, the latent weights are quantized
round-to-nearest into packed ``QuantLinear`` layers (the plain ZeroQuant format: INT-b
group-wise weights, INT8 token-wise activations), so LKD changes which codes are stored,
never the format or its size. The student's activation quantizer is ``QuantLinear``'s own
(``fake_quantize_tokens`` in float64, straight through), so it trains against exactly what the
stored layer computes.

Devices: the captured activations are kept on the host and each batch goes to the block's
device; the packed layers are put on the device of the weights they replace. If anything
fails (an exception, Ctrl-C), every layer replaced so far gets its original ``Linear`` back
(the students train copies, so the float weights are unchanged) and the model its mode.

``fake_quantize_ste`` (the weight quantizer with its STE backward) is a ``Function``,
registered in ``tinyllm.quant.registry`` (``differentiable=False``: finite differences of a
rounding are 0; tests/quant/test_lkd.py checks the straight-through gradient, also against
PyTorch's ``fake_quantize_per_channel_affine`` when torch is installed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.function import Function
from tinyllm.grad_mode import no_grad
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module, eval_mode
from tinyllm.nn.parameter import Parameter
from tinyllm.quant.linear import QuantLinear, _FakeQuantRows
from tinyllm.quant.model import _run_hooked, _Stop
from tinyllm.quant.schemes import compute_qparams, quantize_weight
from tinyllm.tensor import Tensor

__all__ = ["fake_quantize_ste", "lkd_quantize"]


class FakeQuantizeSTE(Function):
    """w_hat = s (clamp(rint(w / s) + z, 0, 2^b - 1) - z) per (row, group); STE backward."""

    @staticmethod
    def forward(ctx, w, scale, zero, bits, group_size):
        xp = backend.get_array_module(w)
        K = w.shape[-1]
        s = xp.repeat(scale.astype(w.dtype, copy=False), group_size, axis=1)[:, :K]
        z = xp.repeat(zero.astype(w.dtype, copy=False), group_size, axis=1)[:, :K]
        u = xp.rint(w / s) + z  # [N, K] unclamped codes
        qmax = 2**bits - 1
        ctx.save_for_backward((u >= 0) & (u <= qmax))  # [N, K] bool: not clamped
        return (xp.clip(u, 0, qmax) - z) * s

    @staticmethod
    def backward(ctx, dy):
        (inside,) = ctx.saved_tensors
        # w_hat = s (clamp(rint(w / s) + z) - z): d rint / dw taken as 1 / s (straight
        # through) inside the clamp range, 0 where the code is clamped
        return dy * inside, None, None, None, None


def fake_quantize_ste(
    weight: Tensor, scale: np.ndarray, zero: np.ndarray, *, bits: int, group_size: int
) -> Tensor:
    """W [N, K] through INT-b codes and back with (scale, zero) [N, G]; gradient: STE.

    The gradient is dy where rint(w / s) + z lies in [0, 2^b - 1] and 0 where it is clamped
    (PyTorch's ``fake_quantize_per_channel_affine`` rule, applied per group of g columns).
    """
    w = weight if isinstance(weight, Tensor) else Tensor(np.asarray(weight))
    if w.ndim != 2:
        raise ValueError(f"fake_quantize_ste: weight must be [N, K], got shape {tuple(w.shape)}")
    if isinstance(bits, bool) or not 1 <= int(bits) <= 8:
        raise ValueError(f"fake_quantize_ste: bits must be in [1, 8], got {bits!r}")
    N, K = w.shape
    if isinstance(group_size, bool) or int(group_size) < 1:
        raise ValueError(f"fake_quantize_ste: group_size must be >= 1, got {group_size}")
    G = -(-K // int(group_size))
    if tuple(scale.shape) != (N, G) or tuple(zero.shape) != (N, G):
        raise ValueError(
            f"fake_quantize_ste: scale and zero must be [N, G] = [{N}, {G}] for weight "
            f"{tuple(w.shape)} and group_size {group_size}, got {tuple(scale.shape)} and "
            f"{tuple(zero.shape)}"
        )
    xp = backend.get_array_module(w.data)
    scale, zero = (xp.asarray(a.data if isinstance(a, Tensor) else a) for a in (scale, zero))
    return FakeQuantizeSTE.apply(w, scale, zero, int(bits), int(group_size))


class StudentLinear(Module):
    """A ``Linear`` during LKD: trainable latent weight, fake-quantized on every forward."""

    def __init__(self, linear: Linear, bits: int, group_size: int | None, act_quant: bool):
        super().__init__()
        self.weight = Parameter(linear.weight.data.copy())
        self.register_buffer("bias", None if linear.bias is None else Tensor(linear.bias.data))
        self.bits, self.group_size, self.act_quant = bits, group_size, act_quant

    def qparams(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(scale, zero, g) of the latent weight now (absmax: constants of this step), on
        the weight's device (nothing read back to the host)."""
        gran = "channel" if self.group_size is None else "group"
        return compute_qparams(self.weight.data, self.bits, gran, self.group_size, True)

    def forward(self, x: Tensor) -> Tensor:
        if self.act_quant:  # QuantLinear's act_quant="token" op: what the stored layer computes
            x = _FakeQuantRows.apply(x, None)
        s, z, g = self.qparams()
        w_hat = fake_quantize_ste(self.weight, s, z, bits=self.bits, group_size=g)
        return F.linear(x, w_hat, self.bias)

    def to_quant_linear(self) -> QuantLinear:
        """The trained layer as a packed ``QuantLinear`` (plain ZeroQuant format), on the
        latent weight's device."""
        W = backend.to_numpy(self.weight.data).astype(np.float64)
        gran = "channel" if self.group_size is None else "group"
        qw = quantize_weight(W, self.bits, gran, self.group_size, True)
        bias = None if self.bias is None else backend.to_numpy(self.bias.data)
        layer = QuantLinear(qw, bias, act_quant="token" if self.act_quant else None,
                            method="zeroquant")  # fmt: skip
        return layer.to(self.weight.device)


def _block_linears(block: Module) -> list[tuple[Module, str, Linear]]:
    out = []
    for _, module in block.named_modules():
        for name, child in module.named_children():
            if isinstance(child, Linear):
                out.append((module, name, child))
    return out


def capture_block_inputs(
    model: Module, block: Module, batches: Sequence, forward: Callable
) -> list[tuple[np.ndarray, tuple, dict]]:
    """(x, other args, kwargs) of ``block``'s call for each batch (the pass stops there)."""
    seen: list[tuple[np.ndarray, tuple, dict]] = []

    def hook(x, *args, **kwargs):
        seen.append((backend.to_numpy(x.data).copy(), args, kwargs))
        raise _Stop  # the rest of the pass is not needed

    _run_hooked(model, batches, forward, {block: hook})
    return seen


def _outputs(block: Module, inputs, device: str = "cpu") -> list[np.ndarray]:
    """``block`` on each captured (x, args, kwargs), x moved to ``device``; outputs on the host."""
    with no_grad():
        return [backend.to_numpy(block(Tensor(backend.to_device(x, device)), *a, **k).data)
                for x, a, k in inputs]  # fmt: skip


def _mse(block: Module, inputs, targets, device: str = "cpu") -> float:
    outs = _outputs(block, inputs, device)
    return float(np.mean([np.mean((o.astype(np.float64) - t) ** 2)
                          for o, t in zip(outs, targets)]))  # fmt: skip


def lkd_quantize(
    model: Module,
    blocks: Sequence[Module],
    calibration: Sequence,
    forward: Callable | None = None,
    bits: int = 4,
    group_size: int | None = 128,
    steps: int = 100,
    lr: float = 1e-4,
    act_quant: bool = True,
    heldout: Sequence | None = None,
    progress: Callable[[str], None] | None = None,
    show_progress: bool = False,
) -> tuple[Module, list[dict]]:
    """ZeroQuant with LKD: every ``Linear`` inside ``blocks`` becomes a packed ``QuantLinear``.

    ``calibration``: batches, ``forward(model, batch)`` runs one (default ``model(batch)``);
    ``steps`` Adam steps per block (one calibration batch per step, cycling), learning rate
    ``lr`` with cosine decay to 0. ``heldout``: batches never trained on, on which the block
    MSE is reported before (= plain ZeroQuant) and after training. Linear layers outside
    ``blocks`` are left as they are. ``show_progress``: a tqdm bar over all steps.
    Returns (model, one report dict per block). On any error the model is restored (module
    docstring) and the error re-raised.
    """
    from tqdm import tqdm

    if not calibration:
        raise ValueError("lkd_quantize: LKD needs calibration batches")
    if steps < 0:
        raise ValueError(f"lkd_quantize: steps must be >= 0, got {steps}")
    if not blocks:
        raise ValueError("lkd_quantize: blocks is empty (no transformer block to distill)")
    forward = forward or (lambda m, batch: m(batch))
    g = None if group_size is None or group_size <= 0 else int(group_size)
    replaced: list[tuple[Module, str, Linear]] = []  # (parent, name, original) of every swap
    bar = tqdm(total=len(blocks) * steps, disable=not show_progress, desc="LKD", unit="step",
               dynamic_ncols=True, leave=False)  # fmt: skip
    try:
        with eval_mode(model):
            xs = capture_block_inputs(model, blocks[0], calibration, forward)
            hs = capture_block_inputs(model, blocks[0], heldout, forward) if heldout else []
            reports = []
            for index, block in enumerate(blocks):
                report, ys, hy = _distill_block(block, index, xs, hs, bits, g, steps, lr, act_quant,
                                                replaced, bar)  # fmt: skip
                reports.append(report)
                xs, hs = (
                    [(y, a, k) for y, (_, a, k) in zip(ys, xs)],
                    [(y, a, k) for y, (_, a, k) in zip(hy, hs)],
                )
                if progress is not None:
                    progress(f"block {index}: {report}")
    except BaseException:
        # rollback: the model gets its original float Linear layers back (the students copied
        # their weights, so those were never changed), in every block done so far
        for parent, name, linear in reversed(replaced):
            setattr(parent, name, linear)
        raise
    finally:
        bar.close()
    return model, reports


def _device(module: Module) -> str:
    """The device of ``module``'s first parameter ("cpu" without one)."""
    first = next(iter(module.parameters()), None)
    return "cpu" if first is None else first.device


def _distill_block(
    block: Module,
    index: int,
    xs: list,
    hs: list,
    bits: int,
    g: int | None,
    steps: int,
    lr: float,
    act_quant: bool,
    replaced: list,
    bar,
) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """Train ``block``'s student layers against its float outputs, then swap in QuantLinear
    layers; returns (report, teacher outputs on ``xs``, teacher outputs on ``hs``). Each swap
    is appended to ``replaced`` (parent, name, original Linear) before it is made. The
    captured activations live on the host; each step moves its batch to the block's device."""
    from tinyllm.optim import Adam

    device = _device(block)
    ys = _outputs(block, xs, device)  # the teacher's outputs = the next block's inputs
    hy = _outputs(block, hs, device)
    frozen = [p for p in block.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        students = []
        for parent, name, linear in _block_linears(block):
            K = linear.in_features
            student = StudentLinear(linear, bits, None if g is None or g >= K else g, act_quant)
            replaced.append((parent, name, linear))
            setattr(parent, name, student)
            students.append((parent, name, student))
        report = {"block": index, "steps": steps}
        if hs:
            report["heldout_mse_rtn"] = _mse(block, hs, hy, device)
        opt = Adam([s.weight for _, _, s in students], lr=lr)
        losses = []
        for step in range(steps):
            for group in opt.param_groups:  # cosine decay to 0
                group["lr"] = lr * 0.5 * (1.0 + np.cos(np.pi * step / steps))
            x, a, k = xs[step % len(xs)]
            out = block(Tensor(backend.to_device(x, device)), *a, **k)
            loss = F.mse_loss(out, Tensor(backend.to_device(ys[step % len(xs)], device)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            bar.update(1)
            bar.set_postfix(block=index, mse=f"{losses[-1]:.3g}")
    finally:  # the block's own parameters train again whatever happened
        for p in frozen:
            p.requires_grad_(True)
    for parent, name, student in students:
        setattr(parent, name, student.to_quant_linear())
    if losses:
        report["train_mse_first"], report["train_mse_last"] = losses[0], losses[-1]
    if hs:
        report["heldout_mse_lkd"] = _mse(block, hs, hy, device)
    return report, ys, hy
