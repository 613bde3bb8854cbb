"""Scalar helpers shared by the Numba kernels: a vectorizable exp and row reductions.

Imported only by the ``*_numba`` modules, which are imported only when a Numba tier first
runs: importing ``tinyllm.kernels`` never imports Numba.

Why these exist (measured on the 2-core AVX-512 CI machine, 4096 x 1024 float32):

- ``math.exp`` inside a Numba loop is a scalar libm call: 29 ms against NumPy's SIMD
  ``np.exp`` at 2 ms (one thread). ``fast_exp`` below is plain arithmetic (range
  reduction, a polynomial and an exponent built from bits), so LLVM vectorizes loops that
  call it: 2.6 ms, within 1 ulp of the true value (float32 and float64).
- Inside a ``prange`` body, loops vectorize only when they index local views (``xr =
  x[r]``, ``pk = p[lo:hi]``), not the whole argument arrays: AdamW ran 4x slower before.
- Without fastmath (banned in gradient code: it changes results), LLVM may not reorder a
  floating-point sum, so ``s += a[c]`` runs one add per 4-cycle latency. Eight independent
  accumulators (``row_sum``, ``row_max``, ``row_dot``) break the chain: 2-5x faster, and
  more accurate than one long sequential sum.

fast_exp(x) = 2^k exp(r), with k = round(x log2 e), r = x - k ln 2 (ln 2 split in a high
part exact in a few bits and a low part, Cody-Waite), |r| <= ln(2)/2, and
exp(r) = 1 + r + r^2 P(r) with P Cephes' degree-5 fit (float32) or the degree-11 Taylor
polynomial (float64). 2^k is built from bits (the biased exponent shifted into place).
Below -87 (float32) / -708 (float64) the result is flushed to 0 (the true value is a
subnormal or 0; -inf gives 0); NaN stays NaN; +inf is not expected (callers pass
x - max <= 0, or -|x|).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from tinyllm.kernels import numba_cache

numba_cache.install()  # before any cached kernel is defined (numba_cache.py says why)

__all__ = [
    "fast_exp",
    "like",
    "normal_cdf",
    "row_dot",
    "row_max",
    "row_sum",
    "row_sum_sq_dev",
]


def _pow2_intrinsic(int_bits: int, mantissa_bits: int, bias: int, float_type, nb_float):
    @intrinsic
    def pow2(typingctx, t):
        """2.0**t for a float t holding an integer in the normal exponent range."""
        if t != nb_float:
            return None

        def codegen(context, builder, signature, args):
            ity = ir.IntType(int_bits)
            i = builder.fptosi(args[0], ity)
            i = builder.add(i, ir.Constant(ity, bias))
            i = builder.shl(i, ir.Constant(ity, mantissa_bits))
            return builder.bitcast(i, float_type)

        return nb_float(t), codegen

    return pow2


_pow2_f32 = _pow2_intrinsic(32, 23, 127, ir.FloatType(), types.float32)
_pow2_f64 = _pow2_intrinsic(64, 52, 1023, ir.DoubleType(), types.float64)


def fast_exp(x):
    """exp(x) (the Python fallback; in Numba code the overloads below run)."""
    return math.exp(x)


def _exp_impl(f):
    """The fast_exp implementation with every constant of float type ``f``.

    exp(x) = 2^t exp(r), t = floor(x log2 e + 1/2), r = x - t ln 2 in [-ln2/2, ln2/2];
    exp(r) = 1 + r + r^2 P(r). Each branch below is a select, so loops vectorize.
    """
    log2e = f(1.4426950408889634)
    ln2_hi = f(0.693145751953125)  # ln 2 rounded to 16 bits: t * ln2_hi is exact
    ln2_lo = f(1.42860682030941723212e-6)  # ln 2 - ln2_hi
    half = f(0.5)
    one = f(1.0)
    zero = f(0.0)
    if f is np.float32:
        lo = f(-87.0)
        # Cephes expf: P of degree 5, within 1 ulp of exp in float32
        p5, p4, p3 = f(1.9875691500e-4), f(1.3981999507e-3), f(8.3334519073e-3)
        p2, p1, p0 = f(4.1665795894e-2), f(1.6666665459e-1), f(5.0000001201e-1)

        def impl32(x):
            xc = lo if x < lo else x  # NaN passes through, and stays NaN
            t = np.floor(xc * log2e + half)
            r = (xc - t * ln2_hi) - t * ln2_lo
            p = ((((p5 * r + p4) * r + p3) * r + p2) * r + p1) * r + p0
            e = (p * (r * r) + r + one) * _pow2_f32(t)
            return zero if x < lo else e  # below lo (and -inf): 0

        return impl32
    lo = f(-708.0)
    c = tuple(f(1 / math.factorial(i)) for i in range(2, 14))  # Taylor 1/2! .. 1/13!
    c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13 = c

    def impl64(x):
        xc = lo if x < lo else x
        t = np.floor(xc * log2e + half)
        r = (xc - t * ln2_hi) - t * ln2_lo
        p = c13
        p = c12 + r * p
        p = c11 + r * p
        p = c10 + r * p
        p = c9 + r * p
        p = c8 + r * p
        p = c7 + r * p
        p = c6 + r * p
        p = c5 + r * p
        p = c4 + r * p
        p = c3 + r * p
        p = c2 + r * p
        e = (p * (r * r) + r + one) * _pow2_f64(t)
        return zero if x < lo else e

    return impl64


_exp_f32 = _exp_impl(np.float32)
_exp_f64 = _exp_impl(np.float64)


@overload(fast_exp)
def _fast_exp_overload(x):
    if x == types.float32:
        return _exp_f32
    if x == types.float64:
        return _exp_f64
    return None


def normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2 (the Python fallback; Numba runs the overloads)."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# erfc(z) ~= t exp(-z^2 + Q(t)), t = 1 / (1 + z / 2), z >= 0: the Chebyshev-fitted
# approximation of Numerical Recipes (Press et al., 2nd ed., section 6.2, "erfcc"), with
# fractional error below 1.2e-7 for every z, i.e. about float32's epsilon. Q's coefficients,
# constant term first:
_ERFC_Q = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
           0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)  # fmt: skip


def _normal_cdf_f32_impl():
    f = np.float32
    q0, q1, q2, q3, q4, q5, q6, q7, q8, q9 = (f(c) for c in _ERFC_Q)
    half, one = f(0.5), f(1.0)
    inv_sqrt2 = f(0.7071067811865476)

    def impl(x):
        # Phi(x) = erfc(-x / sqrt 2) / 2: for x < 0 the tail itself (no cancellation), for
        # x >= 0 one minus the tail. libm's erf is a scalar call; this is arithmetic and
        # fast_exp, so loops calling it vectorize.
        z = abs(x) * inv_sqrt2
        t = one / (one + half * z)
        q = q9
        q = q8 + t * q
        q = q7 + t * q
        q = q6 + t * q
        q = q5 + t * q
        q = q4 + t * q
        q = q3 + t * q
        q = q2 + t * q
        q = q1 + t * q
        q = q0 + t * q
        tail = half * t * fast_exp(q - z * z)  # Phi(-|x|)
        return one - tail if x >= 0 else tail

    return impl


def _normal_cdf_f64(x):
    return np.float64(0.5) * (np.float64(1.0) + math.erf(x * np.float64(0.7071067811865476)))


@overload(normal_cdf)
def _normal_cdf_overload(x):
    if x == types.float32:  # within ~2e-7 of Phi: float32's own precision
        return _normal_cdf_f32_impl()
    if x == types.float64:  # libm's erf: full float64 precision
        return _normal_cdf_f64
    return None


def like(a, value):
    """``value`` as the element type of array ``a`` (a literal like 0.5 or an int is
    otherwise float64 in Numba, and float32 * float64 promotes the whole loop to float64)."""
    return a.dtype.type(value)


@overload(like)
def _like_overload(a, value):
    if a.dtype == types.float32:
        return lambda a, value: np.float32(value)
    if a.dtype == types.float64:
        return lambda a, value: np.float64(value)
    return None


@njit(cache=True, error_model="numpy")
def row_max(a):
    """max of a 1-D array (eight running maxima, then combined); -inf when empty."""
    n = a.shape[0]
    if n == 0:
        return like(a, -np.inf)
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = a[0]
    c = 0
    while c + 8 <= n:
        m0 = max(m0, a[c])
        m1 = max(m1, a[c + 1])
        m2 = max(m2, a[c + 2])
        m3 = max(m3, a[c + 3])
        m4 = max(m4, a[c + 4])
        m5 = max(m5, a[c + 5])
        m6 = max(m6, a[c + 6])
        m7 = max(m7, a[c + 7])
        c += 8
    while c < n:
        m0 = max(m0, a[c])
        c += 1
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@njit(cache=True, error_model="numpy")
def row_sum(a):
    """sum of a 1-D array (eight partial sums, combined pairwise)."""
    n = a.shape[0]
    z = like(a, 0.0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
    c = 0
    while c + 8 <= n:
        s0 += a[c]
        s1 += a[c + 1]
        s2 += a[c + 2]
        s3 += a[c + 3]
        s4 += a[c + 4]
        s5 += a[c + 5]
        s6 += a[c + 6]
        s7 += a[c + 7]
        c += 8
    while c < n:
        s0 += a[c]
        c += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, error_model="numpy")
def row_dot(a, b):
    """sum_i a_i b_i of two 1-D arrays of one length (eight partial sums)."""
    n = a.shape[0]
    z = like(a, 0.0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
    c = 0
    while c + 8 <= n:
        s0 += a[c] * b[c]
        s1 += a[c + 1] * b[c + 1]
        s2 += a[c + 2] * b[c + 2]
        s3 += a[c + 3] * b[c + 3]
        s4 += a[c + 4] * b[c + 4]
        s5 += a[c + 5] * b[c + 5]
        s6 += a[c + 6] * b[c + 6]
        s7 += a[c + 7] * b[c + 7]
        c += 8
    while c < n:
        s0 += a[c] * b[c]
        c += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, error_model="numpy")
def row_sum_sq_dev(a, mu):
    """sum_i (a_i - mu)^2 of a 1-D array (eight partial sums)."""
    n = a.shape[0]
    z = like(a, 0.0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
    c = 0
    while c + 8 <= n:
        d0 = a[c] - mu
        d1 = a[c + 1] - mu
        d2 = a[c + 2] - mu
        d3 = a[c + 3] - mu
        d4 = a[c + 4] - mu
        d5 = a[c + 5] - mu
        d6 = a[c + 6] - mu
        d7 = a[c + 7] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        s4 += d4 * d4
        s5 += d5 * d5
        s6 += d6 * d6
        s7 += d7 * d7
        c += 8
    while c < n:
        d0 = a[c] - mu
        s0 += d0 * d0
        c += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
