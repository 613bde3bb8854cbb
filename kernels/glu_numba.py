"""Numba bodies of the gated linear units SwiGLU and GeGLU (math in ``glu.py``).

Rows in parallel; inside a row, one loop per (activation, direction), so that every loop
is branch-free apart from selects and vectorizes (``fast_exp`` for the sigmoid and tanh;
``normal_cdf`` for the exact GELU: arithmetic in float32, libm's scalar ``erf`` in
float64). Loops index row views only (a loop that indexes the whole 2-D arrays inside
``prange`` does not vectorize). Constants go through ``like`` to keep float32 kernels in
float32.
"""

from __future__ import annotations

from numba import njit, prange

from tinyllm.kernels.numba_math import fast_exp, like, normal_cdf


@njit(cache=True, error_model="numpy")
def _sigmoid(g, one):
    """1 / (1 + e^-g) from e = exp(-|g|) (never overflows)."""
    e = fast_exp(-abs(g))
    return one / (one + e) if g >= 0 else e / (one + e)


@njit(cache=True, error_model="numpy")
def _silu_row(gate, up, out, dout, dgate, dup, backward):
    """silu(g) = g s, s = sigmoid(g);  silu'(g) = s (1 + g (1 - s))."""
    one = like(gate, 1.0)
    if backward:
        for f in range(gate.shape[0]):
            g = gate[f]
            s = _sigmoid(g, one)
            d = dout[f]
            dgate[f] = d * up[f] * (s * (one + g * (one - s)))
            dup[f] = d * (g * s)
    else:
        for f in range(gate.shape[0]):
            g = gate[f]
            out[f] = g * _sigmoid(g, one) * up[f]


@njit(cache=True, error_model="numpy")
def _tanh_inner(g, one, two, k0, k1):
    """tanh(z), z = k0 (g + k1 g^3), as sign(z) (1 - e) / (1 + e), e = exp(-2|z|)."""
    z = k0 * (g + k1 * g * g * g)
    e = fast_exp(-two * abs(z))
    t = (one - e) / (one + e)
    return t if z >= 0 else -t


@njit(cache=True, error_model="numpy")
def _gelu_tanh_row(gate, up, out, dout, dgate, dup, backward):
    """g (1 + tanh z) / 2;  derivative (1 + tanh z)/2 + g (1 - tanh^2 z) k0 (1 + 3 k1 g^2)/2."""
    one = like(gate, 1.0)
    half = like(gate, 0.5)
    two = like(gate, 2.0)
    k0 = like(gate, 0.7978845608028654)  # sqrt(2 / pi)
    k1 = like(gate, 0.044715)
    k13 = like(gate, 3 * 0.044715)
    if backward:
        for f in range(gate.shape[0]):
            g = gate[f]
            t = _tanh_inner(g, one, two, k0, k1)
            d = dout[f]
            slope = half * (one + t) + half * g * (one - t * t) * k0 * (one + k13 * g * g)
            dgate[f] = d * up[f] * slope
            dup[f] = d * (half * g * (one + t))
    else:
        for f in range(gate.shape[0]):
            g = gate[f]
            out[f] = half * g * (one + _tanh_inner(g, one, two, k0, k1)) * up[f]


@njit(cache=True, error_model="numpy")
def _gelu_row(gate, up, out, dout, dgate, dup, backward):
    """g Phi(g), Phi(g) = (1 + erf(g / sqrt 2)) / 2;  derivative Phi(g) + g phi(g)."""
    half = like(gate, 0.5)
    inv_sqrt_2pi = like(gate, 0.3989422804014327)
    if backward:
        for f in range(gate.shape[0]):
            g = gate[f]
            cdf = normal_cdf(g)
            d = dout[f]
            dgate[f] = d * up[f] * (cdf + g * fast_exp(-half * g * g) * inv_sqrt_2pi)
            dup[f] = d * (g * cdf)
    else:
        for f in range(gate.shape[0]):
            g = gate[f]
            out[f] = g * normal_cdf(g) * up[f]


@njit(parallel=True, cache=True, error_model="numpy")
def glu_rows(x, act, out, dout, dx, backward):
    """Forward (out [R, F] = act(gate) * up) or backward (dx [R, 2F] from dout [R, F]).

    x: [R, 2F] = [gate | up]; act: 0 silu, 1 gelu (tanh), 2 gelu (erf). The forward
    ignores dout and dx; the backward ignores out (the caller passes stand-ins).
    """
    R, F2 = x.shape
    F = F2 // 2
    for r in prange(R):
        xr = x[r]  # [2F]
        dxr = dx[r]  # [2F]
        gate, up = xr[:F], xr[F:]
        dgate, dup = dxr[:F], dxr[F:]
        if act == 0:
            _silu_row(gate, up, out[r], dout[r], dgate, dup, backward)
        elif act == 1:
            _gelu_tanh_row(gate, up, out[r], dout[r], dgate, dup, backward)
        else:
            _gelu_row(gate, up, out[r], dout[r], dgate, dup, backward)


@njit(parallel=True, cache=True, error_model="numpy")
def act_rows(x, act, dy, out, backward):
    """Elementwise activation of x [R, C]: out = act(x) (forward) or dy * act'(x) (backward).

    act: 0 silu, 1 gelu (tanh), 2 gelu (erf) -- the same formulas as the gated units.
    """
    R, C = x.shape
    for r in prange(R):
        xr, dr, o = x[r], dy[r], out[r]
        one = like(xr, 1.0)
        half = like(xr, 0.5)
        if act == 0:
            for c in range(C):
                g = xr[c]
                s = _sigmoid(g, one)
                o[c] = dr[c] * (s * (one + g * (one - s))) if backward else g * s
        elif act == 1:
            two = like(xr, 2.0)
            k0 = like(xr, 0.7978845608028654)  # sqrt(2 / pi)
            k1 = like(xr, 0.044715)
            k13 = like(xr, 3 * 0.044715)
            for c in range(C):
                g = xr[c]
                t = _tanh_inner(g, one, two, k0, k1)
                if backward:
                    slope = half * (one + t) + half * g * (one - t * t) * k0 * (one + k13 * g * g)
                    o[c] = dr[c] * slope
                else:
                    o[c] = half * g * (one + t)
        else:
            inv_sqrt_2pi = like(xr, 0.3989422804014327)
            for c in range(C):
                g = xr[c]
                cdf = normal_cdf(g)
                if backward:
                    o[c] = dr[c] * (cdf + g * fast_exp(-half * g * g) * inv_sqrt_2pi)
                else:
                    o[c] = g * cdf
