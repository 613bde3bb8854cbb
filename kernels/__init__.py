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
``tier_counts()`` record what actually ran; ``select_tier(op, xp, dtype)`` says what would;
``kernel_tiers(op)`` lists the tiers kernel ``op`` has bodies for (each module declares
them where it builds its bodies, with ``dispatch.declare``), which is what the op registry
and ``tinyllm ops`` report.

API (shapes: R rows of C, V classes, F gate width, attention [B, H, T, D]):

    softmax_forward(x, scale=1, causal=False) -> y   log_softmax_forward(x) -> y
    softmax_backward(dy, y, scale=1) -> dx           log_softmax_backward(dy, y) -> dx
        (softmax of scale x; causal: x [..., Tq, Tk], row i over columns j <= i only)
    cross_entropy_forward(logits, target, ignore_index=-100, label_smoothing=0.0)
        -> (loss [...], lse [...])                   # per row, unreduced
    cross_entropy_backward(dloss, logits, target, lse, ignore_index=-100,
        label_smoothing=0.0) -> dlogits             # dloss: [...] or a scalar
        (a class index outside [0, V) that is not ignore_index: IndexError)
    cross_entropy_soft_forward(logits, target, label_smoothing=0.0) -> (loss, lse)
    cross_entropy_soft_backward(dloss, logits, target, lse, label_smoothing=0.0,
        target_grad=False) -> (dlogits, dtarget or None)   # target: probabilities [..., V]

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
    geglu_forward(x, approximate="none"|"tanh"), geglu_backward(dout, x, approximate)
        (default "none", the exact GELU, as F.gelu and F.geglu)
    activation_forward(x, activation="silu"|"gelu_tanh"|"gelu") -> act(x)    # elementwise
    activation_backward(dy, x, activation) -> dy * act'(x)

    adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas=(0.9, 0.999),
        eps=1e-8, weight_decay=1e-2) -> None        # in place, PyTorch's exact update
    adamw_step_multi(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, ...) -> None
        (the same update on lists of tensors; one CUDA launch for all of them)

    attention_forward(q, k, v, *, causal=False, key_padding_mask=None, scale=None,
        block_q=64, block_k=64) -> (o, lse)         # q [B,H,Tq,D], k/v [B,Hkv,Tk,D]
    attention_backward(do, q, k, v, o, lse, *, causal=False, key_padding_mask=None,
        scale=None, block_q=64, block_k=64) -> (dq, dk, dv)
    naive_attention_forward / naive_attention_backward: the same, S and P materialized
        (the reference tier, callable directly)

    selective_scan_forward(u, delta, A, B, C, D=None, z=None, delta_bias=None,
        delta_softplus=False) -> (out, last_state, states)   # Mamba's scan, u [batch, dim, L]
    selective_scan_backward(dout, u, delta, A, B, C, states, ...) -> (du, ddelta, dA, dB, dC,
        dD, dz, ddelta_bias)                        # selective_scan_associative: the oracle
    dequant_matmul(x, packed, scales, zeros, table, bits, group_size) -> x W_hat^T
        (W_hat dequantized from packed 1- to 8-bit codes group by group, never stored)
    paged_attention_forward(q, k_cache, v_cache, block_tables, context_lens, scale=None)
        -> o [N, H, D]                              # decode through a paged KV cache
    paged_prefill_attention(q, k_cache, v_cache, block_table, context_len, scale=None)
    im2col.im2col(x, kh, kw, stride, dilation, pads, pad_value=0.0)
        -> cols [N, C, kh, kw, Ho, Wo]              # the module ``im2col``: its name is taken
    im2col.col2im(cols, H, W, stride, dilation, pads) -> dx [N, C, H, W]   # the adjoint
    wkv4_forward(w, u, k, v) -> wkv [B, T, C]       # RWKV-4's time mixing
    wkv4_backward(w, u, k, v, gy) -> (dw, du, dk, dv)

Threads: Numba kernels run rows in parallel on ``numba.get_num_threads()`` threads; below
``dispatch.SERIAL_BELOW`` elements of work their serial twin runs instead (the same body
compiled without ``parallel``, in the calling thread: waking the team costs more than such
kernels take); results never depend on the thread count or on which of the two ran.
At the first parallel launch Numba's threading layer and thread count are chosen by
tinyllm's thread policy (``tinyllm/runtime.py``: workqueue unless the user chose a layer,
``TINYLLM_NUM_THREADS`` else the BLAS pool's size); nothing is set at import.

Op names for ``last_tier``: the forward/backward function names above ("softmax_forward",
"glu_backward", "adamw_step", "attention_forward", ...; SwiGLU and GeGLU record as
"glu_forward"/"glu_backward").

>>> import numpy as np, tinyllm.kernels as K
>>> y = K.softmax_forward(np.array([[0.0, 0.0]]))
>>> y.tolist()
[[0.5, 0.5]]
"""

# the module itself (``K.im2col.im2col``, ``K.im2col.col2im``), imported so that its kernels
# declare their tiers: its function of the same name would shadow it
from tinyllm.kernels import im2col as im2col
from tinyllm.kernels.adamw import adamw_step, adamw_step_multi
from tinyllm.kernels.attention import (
    attention_backward,
    attention_forward,
    naive_attention_backward,
    naive_attention_forward,
)
from tinyllm.kernels.dispatch import (
    ENV_VAR,
    TIERS,
    declare,
    declared_kernels,
    kernel_tiers,
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
from tinyllm.kernels.paged_attention import (
    gather_kv,
    paged_attention_forward,
    paged_prefill_attention,
)
from tinyllm.kernels.quant import dequant_matmul
from tinyllm.kernels.rope import rope_backward, rope_forward
from tinyllm.kernels.selective_scan import (
    selective_scan_associative,
    selective_scan_backward,
    selective_scan_forward,
)
from tinyllm.kernels.softmax import (
    cross_entropy_backward,
    cross_entropy_forward,
    cross_entropy_soft_backward,
    cross_entropy_soft_forward,
    log_softmax_backward,
    log_softmax_forward,
    softmax_backward,
    softmax_forward,
)
from tinyllm.kernels.wkv import wkv4_backward, wkv4_forward

__all__ = [
    "ENV_VAR",
    "TIERS",
    "activation_backward",
    "activation_forward",
    "adamw_step",
    "adamw_step_multi",
    "attention_backward",
    "attention_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "cross_entropy_soft_backward",
    "cross_entropy_soft_forward",
    "declare",
    "declared_kernels",
    "dequant_matmul",
    "gather_kv",
    "geglu_backward",
    "geglu_forward",
    "glu_backward",
    "glu_forward",
    "kernel_tiers",
    "last_tier",
    "layer_norm_backward",
    "layer_norm_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "naive_attention_backward",
    "naive_attention_forward",
    "paged_attention_forward",
    "paged_prefill_attention",
    "reset_counts",
    "rms_norm_backward",
    "rms_norm_forward",
    "rope_backward",
    "rope_forward",
    "select_tier",
    "selective_scan_associative",
    "selective_scan_backward",
    "selective_scan_forward",
    "softmax_backward",
    "softmax_forward",
    "swiglu_backward",
    "swiglu_forward",
    "tier_counts",
    "use",
    "wkv4_backward",
    "wkv4_forward",
]
