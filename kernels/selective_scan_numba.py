"""Numba bodies of the selective scan, forward and backward (math in ``selective_scan.py``).

Forward: one task per (b, d) in ``prange``, sequential over t, the N states in a local
array. Backward: one task per (b, g, slice) (a fixed slice of the channels of group g,
so that the task owns its rows of the dB/dC scratch: no two tasks write the same
element); per channel it walks the chunks from the last to the first, recomputes the
chunk's states h and decays a from the saved state, then runs the reverse scan over the
chunk. B and C arrive as [batch, G, L, N] (the N states of one step contiguous).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinyllm.kernels.numba_math import fast_exp, like


@njit(parallel=True, cache=True, error_model="numpy")
def scan_forward(u, dt, A, Bt, Ct, D, z, has_z, chunk, out, last_state, states):
    """out [batch, dim, L]; last_state [batch, dim, N]; states [batch, dim, n_chunks, N].

    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t;  out_t = (<C_t, h_t> + D u_t) silu(z_t).
    u, dt (= Delta), z: [batch, dim, L]; A: [dim, N]; Bt, Ct: [batch, G, L, N]; D: [dim].
    """
    batch, dim, L = u.shape
    N = A.shape[1]
    H = dim // Bt.shape[1]  # channels per group
    one = like(u, 1.0)
    for task in prange(batch * dim):
        b = task // dim
        d = task % dim
        g = d // H
        h = last_state[b, d]  # [N]: the running state, left holding h_{L-1}
        Ad = A[d]
        for n in range(N):
            h[n] = 0
        for t in range(L):
            if t % chunk == 0:
                states[b, d, t // chunk, :] = h
            delta = dt[b, d, t]
            x = delta * u[b, d, t]
            Bb = Bt[b, g, t]
            Cc = Ct[b, g, t]
            y = like(u, 0.0)
            for n in range(N):
                h[n] = fast_exp(delta * Ad[n]) * h[n] + x * Bb[n]
                y += Cc[n] * h[n]
            o = y + D[d] * u[b, d, t]
            if has_z:
                zz = z[b, d, t]
                o = o * zz / (one + fast_exp(-zz))
            out[b, d, t] = o


@njit(parallel=True, cache=True, error_model="numpy")
def scan_backward(
    dout, dlast, u, dt, A, Bt, Ct, D, z, has_z, chunk, states,
    du, ddt, dz, dA_parts, dD_parts, dB_parts, dC_parts,
):  # fmt: skip
    """The reverse scan. Writes du, ddt (dDelta), dz [batch, dim, L]; dA_parts [batch,
    dim, N] and dD_parts [batch, dim] (summed over batch by the caller); dB_parts,
    dC_parts [batch, G, S, L, N] (summed over the S slices by the caller).

    g_t = C_t dy_t + a_{t+1} g_{t+1} (g_{L-1} = C dy + dlast), dy_t = dout_t silu(z_t).
    """
    batch, dim, L = u.shape
    N = A.shape[1]
    G = Bt.shape[1]
    S = dB_parts.shape[2]
    H = dim // G
    n_chunks = states.shape[2]
    one = like(u, 1.0)
    for task in prange(batch * G * S):
        b = task // (G * S)
        g = (task // S) % G
        s = task % S
        dBs = dB_parts[b, g, s]  # [L, N]
        dCs = dC_parts[b, g, s]
        for t in range(L):
            for n in range(N):
                dBs[t, n] = 0
                dCs[t, n] = 0
        hs = np.empty((chunk + 1, N), u.dtype)  # hs[i] = h_{t0 + i - 1} in the chunk
        decay = np.empty((chunk, N), u.dtype)  # decay[i] = a_{t0 + i}
        carry = np.empty(N, u.dtype)  # the adjoint state g
        for d in range(g * H + s * H // S, g * H + (s + 1) * H // S):
            Ad = A[d]
            dAd = dA_parts[b, d]
            for n in range(N):
                carry[n] = dlast[b, d, n]
                dAd[n] = 0
            dD_acc = like(u, 0.0)
            for k in range(n_chunks - 1, -1, -1):
                t0 = k * chunk
                t1 = min(L, t0 + chunk)
                for n in range(N):
                    hs[0, n] = states[b, d, k, n]
                for t in range(t0, t1):  # recompute h and a over the chunk
                    i = t - t0
                    delta = dt[b, d, t]
                    x = delta * u[b, d, t]
                    Bb = Bt[b, g, t]
                    for n in range(N):
                        a = fast_exp(delta * Ad[n])
                        decay[i, n] = a
                        hs[i + 1, n] = a * hs[i, n] + x * Bb[n]
                for t in range(t1 - 1, t0 - 1, -1):  # the reverse scan
                    i = t - t0
                    delta = dt[b, d, t]
                    ut = u[b, d, t]
                    Bb = Bt[b, g, t]
                    Cc = Ct[b, g, t]
                    dy = dout[b, d, t]
                    if has_z:  # out = (y + D u) silu(z)
                        zz = z[b, d, t]
                        sg = one / (one + fast_exp(-zz))
                        y = like(u, 0.0)
                        for n in range(N):
                            y += Cc[n] * hs[i + 1, n]
                        dz[b, d, t] = dy * (y + D[d] * ut) * sg * (one + zz * (one - sg))
                        dy = dy * zz * sg
                    dD_acc += dy * ut
                    d_delta = like(u, 0.0)
                    d_u = like(u, 0.0)
                    for n in range(N):
                        a = decay[i, n]
                        h_prev = hs[i, n]
                        gn = carry[n] + Cc[n] * dy  # g_t = C_t dy_t + a_{t+1} g_{t+1}
                        dCs[t, n] += dy * hs[i + 1, n]  # y_t = <C_t, h_t>
                        dBs[t, n] += gn * delta * ut  # h_t = a_t h_{t-1} + Delta_t B_t u_t
                        dAd[n] += gn * delta * a * h_prev
                        d_delta += gn * (Bb[n] * ut + Ad[n] * a * h_prev)
                        d_u += gn * Bb[n]
                        carry[n] = a * gn  # carried to step t - 1
                    ddt[b, d, t] = d_delta
                    du[b, d, t] = d_u * delta + D[d] * dy
            dD_parts[b, d] = dD_acc
