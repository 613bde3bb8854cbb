"""tinyllm.kernels: the hot operations, forward and backward, arrays in and arrays out.

Each op has one signature and three bodies, chosen per call by ``dispatch``:

1. ``reference`` -- array ops on ``xp`` (NumPy or CuPy): readable, and the oracle;
2. ``numba``     -- ``@njit(parallel=True, cache=True)`` CPU kernels (``*_numba.py``),
   rows in ``prange``, explicit scalar loops, no fastmath; imported and compiled on first use;
3. ``cuda``      -- ``extern "C"`` kernels in ``*.cu`` beside the Python, compiled lazily
   through ``cupy.RawModule`` (float32 and float64 entry points).

Kernels know nothing of Tensor. Any leading dims are accepted ([..., C] is viewed as rows
[R, C]); inputs may be non-contiguous (the kernel tiers copy them). float32 and float64 run
the kernels; other float dtypes run the reference (computing in float32).

Choosing the tier: automatic by device (NumPy array -> numba, CuPy array -> cuda, else
reference); forced by ``TINYLLM_KERNELS=reference|numba|cuda|auto`` (read at each call) or
by the thread-local context manager ``use("reference")``. ``last_tier(op)`` and
``tier_counts()`` record what actually ran; ``select_tier(op, xp, dtype)`` says what would.

API (shapes: R rows of C, V classes, F gate width, attention [B, H, T, D]):

    softmax_forward(x, scale=1, causal=False) -> y   log_softmax_forward(x) -> y
    softmax_backward(dy, y, scale=1) -> dx           log_softmax_backward(dy, y) -> dx
        (softmax of scale x; causal: x [..., Tq, Tk], row i over columns j <= i only)
    cross_entropy_forward(logits, target, ignore_index=-100, label_smoothing=0.0)
        -> (loss [...], lse [...])                   # per row, unreduced
    cross_entropy_backward(dloss, logits, target, lse, ignore_index=-100,
        label_smoothing=0.0) -> dlogits             # dloss: [...] or a scalar

    layer_norm_forward(x, weight=None, bias=None, eps=1e-5, residual=None)
        -> (y, mean, rstd) or (y, mean, rstd, summed)    # summed = x + residual
    layer_norm_backward(dy, x, mean, rstd, weight=None, dsummed=None)
        -> (dx, dweight, dbias)                     # x: the normalized input (summed)
    rms_norm_forward(x, weight=None, eps=1e-6, residual=None)
        -> (y, rstd) or (y, rstd, summed)
    rms_norm_backward(dy, x, rstd, weight=None, dsummed=None) -> (dx, dweight)

    rope_forward(x, cos, sin, interleaved=False) -> y      # x [..., T, D], cos/sin [T, D/2]
    rope_backward(dy, cos, sin, interleaved=False) -> dx   # rotation by -angle

    glu_forward(x, activation="silu"|"gelu_tanh"|"gelu") -> out     # x [..., 2F] -> [..., F]
    glu_backward(dout, x, activation) -> dx                          # d[gate | up]
    swiglu_forward(x), swiglu_backward(dout, x)
    geglu_forward(x, approximate="tanh"|"none"), geglu_backward(dout, x, approximate)
    activation_forward(x, activation="silu"|"gelu_tanh"|"gelu") -> act(x)    # elementwise
    activation_backward(dy, x, activation) -> dy * act'(x)

    adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas=(0.9, 0.999),
        eps=1e-8, weight_decay=1e-2) -> None        # in place, PyTorch's exact update

    attention_forward(q, k, v, *, causal=False, key_padding_mask=None, scale=None,
        block_q=64, block_k=64) -> (o, lse)         # q [B,H,Tq,D], k/v [B,Hkv,Tk,D]
    attention_backward(do, q, k, v, o, lse, *, causal=False, key_padding_mask=None,
        scale=None, block_q=64, block_k=64) -> (dq, dk, dv)
    naive_attention_forward / naive_attention_backward: the same, S and P materialized
        (the reference tier, callable directly)

Threads: Numba kernels run rows in parallel on ``numba.get_num_threads()`` threads; below
``dispatch.SERIAL_BELOW`` elements of work their serial twin runs instead (the same body
compiled without ``parallel``, in the calling thread: waking the team costs more than such
kernels take); results never depend on the thread count or on which of the two ran.
Before the first launch ``OMP_WAIT_POLICY`` is set to PASSIVE (unless already set):
spinning OpenMP workers otherwise starve the next NumPy matmul's OpenBLAS threads on a
2-core machine.

Op names for ``last_tier``: the forward/backward function names above ("softmax_forward",
"glu_backward", "adamw_step", "attention_forward", ...; SwiGLU and GeGLU record as
"glu_forward"/"glu_backward").

>>> import numpy as np, tinyllm.kernels as K
>>> y = K.softmax_forward(np.array([[0.0, 0.0]]))
>>> y.tolist()
[[0.5, 0.5]]
"""

from tinyllm.kernels.adamw import adamw_step
from tinyllm.kernels.attention import (
    attention_backward,
    attention_forward,
    naive_attention_backward,
    naive_attention_forward,
)
from tinyllm.kernels.dispatch import (
    ENV_VAR,
    TIERS,
    last_tier,
    reset_counts,
    select_tier,
    tier_counts,
    use,
)
from tinyllm.kernels.glu import (
    activation_backward,
    activation_forward,
    geglu_backward,
    geglu_forward,
    glu_backward,
    glu_forward,
    swiglu_backward,
    swiglu_forward,
)
from tinyllm.kernels.norms import (
    layer_norm_backward,
    layer_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
)
from tinyllm.kernels.rope import rope_backward, rope_forward
from tinyllm.kernels.softmax import (
    cross_entropy_backward,
    cross_entropy_forward,
    log_softmax_backward,
    log_softmax_forward,
    softmax_backward,
    softmax_forward,
)

__all__ = [
    "ENV_VAR",
    "TIERS",
    "activation_backward",
    "activation_forward",
    "adamw_step",
    "attention_backward",
    "attention_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "geglu_backward",
    "geglu_forward",
    "glu_backward",
    "glu_forward",
    "last_tier",
    "layer_norm_backward",
    "layer_norm_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "naive_attention_backward",
    "naive_attention_forward",
    "reset_counts",
    "rms_norm_backward",
    "rms_norm_forward",
    "rope_backward",
    "rope_forward",
    "select_tier",
    "softmax_backward",
    "softmax_forward",
    "swiglu_backward",
    "swiglu_forward",
    "tier_counts",
    "use",
]
