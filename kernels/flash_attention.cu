// FlashAttention forward and backward, tiled (math in attention.py).
//
// Layout: q, o, do, dq [B, H, Tq, D]; k, v [B, Hkv, Tk, D]; lse, delta [B, H, Tq];
// keep [B, Tk] (bool, read only when has_mask); dk_part, dv_part [B, H, Tk, D] (one per
// query head; the caller sums each GQA group). Query head h reads kv head h / (H / Hkv).
// Key j is visible to query i iff (!causal || j <= i) && (!has_mask || keep[b, j]).
// tau = scale. Arithmetic in T (float32 for float32 inputs, float64 for float64).
//
// Every kernel: one thread block of blockDim.x threads (any count; the wrapper launches 256)
// owns a tile of `own` rows (queries for the forward and dq kernels, keys for dk/dv) and
// streams tiles of the other operand through shared memory, one tile at a time:
//
//   scores  S[r, c] = tau q_r . k_c over the tile pair: thread t computes entries
//           t, t + blockDim.x, ... of the [br, bc] tile (dot products from shared memory);
//   outputs the block's [own, D] accumulator lives in registers, element e = t + n blockDim.x
//           of the tile belonging to thread t (at most FLASH_MAX_OUT per thread:
//           own * D <= FLASH_MAX_OUT * blockDim.x, checked by the wrapper).
//
// Shared-memory rows of D numbers have the stride D + 1 and score rows bc + 1 (an odd
// stride: neighbouring threads reading different rows hit different banks). The wrapper
// picks the tile sizes (br query rows, bc key rows) so that a block needs at most 48 KiB of
// dynamic shared memory (no opt-in), and computes the same byte counts as below.
//
// flash_forward: grid (B*H, ceil(Tq / br)). Q tile (pre-scaled by tau) in shared memory;
// per key tile of bc rows: S = Q K^T (masked entries -inf), then per query row (one thread
// per row) the online softmax
//     m' = max(m, max_c S_rc),  alpha = exp(m - m'),  P_rc = exp(S_rc - m'),
//     l' = alpha l + sum_c P_rc          (m' = -inf: nothing visible yet, P = 0, alpha = 1)
// and every thread updates its outputs: acc_rd = alpha_r acc_rd + sum_c P_rc V_cd.
// K and V share one buffer (V is loaded once S is computed). End: o = acc / l,
// lse = m + log l (o = 0, lse = -inf for a row with no visible key). Causal: key tiles
// beyond the block's last query are skipped.
//
// flash_backward_dkdv: grid (B*H, ceil(Tk / bc)); the block owns bc key rows (K, V in
// shared memory; dK, dV in registers) and streams query tiles of br rows (Q, dO, lse,
// delta in shared memory). P is recomputed from lse, never stored between kernels:
//     P_rc = exp(S_rc - lse_r),  dP_rc = dO_r . v_c,  dS_rc = P_rc (dP_rc - delta_r)
//     dV_c += sum_r P_rc dO_r,   dK_c += tau sum_r dS_rc q_r
// Causal: query tiles that end before the block's first key are skipped.
// flash_backward_dq: grid (B*H, ceil(Tq / br)); the block owns br query rows and streams
// key tiles: dQ_r = tau sum_c dS_rc k_c. Two kernels instead of atomics: exact and
// deterministic, at the price of recomputing S and dP once more.
#include "cuda_common.cuh"

#define FLASH_MAX_OUT 32  // accumulator elements per thread (registers)

__device__ __forceinline__ bool key_visible(int i, int j, int causal, int has_mask,
                                            const bool* __restrict__ keep_b) {
    return (!causal || j <= i) && (!has_mask || keep_b[j]);
}

// rows [r0, r0 + n) of a [rows, D] array (global, row stride D) into shared memory with row
// stride D + 1, rows r0 + r >= limit as zeros; scaled by mul.
template <typename T>
__device__ __forceinline__ void load_rows(T* __restrict__ dst, const T* __restrict__ src, int r0,
                                          int n, int limit, int D, T mul) {
    for (int e = threadIdx.x; e < n * D; e += blockDim.x) {
        const int r = e / D, d = e - r * D;
        dst[r * (D + 1) + d] = (r0 + r < limit) ? src[(i64)(r0 + r) * D + d] * mul : T(0);
    }
}

template <typename T>
__device__ __forceinline__ T dot_rows(const T* __restrict__ a, const T* __restrict__ b, int D) {
    T s = T(0);
    for (int d = 0; d < D; ++d) s += a[d] * b[d];
    return s;
}

template <typename T>
__device__ void flash_forward_tiles(const T* __restrict__ q, const T* __restrict__ k,
                                    const T* __restrict__ v, const bool* __restrict__ keep,
                                    T* __restrict__ o, T* __restrict__ lse, int H, int Hkv,
                                    int Tq, int Tk, int D, int br, int bc, int causal,
                                    int has_mask, T scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int ld = D + 1, lp = bc + 1;
    T* qs = reinterpret_cast<T*>(smem_raw);  // [br, D + 1], tau q
    T* kvs = qs + br * ld;                   // [bc, D + 1], K then V of the current tile
    T* ps = kvs + bc * ld;                   // [br, bc + 1], S then P
    T* m_s = ps + br * lp;                   // [br] running max
    T* l_s = m_s + br;                       // [br] running sum
    T* a_s = l_s + br;                       // [br] alpha of the current tile
    const int bh = blockIdx.x, b = bh / H, h = bh % H, kvh = h / (H / Hkv);
    const int q0 = blockIdx.y * br;
    const int nt = blockDim.x, tid = threadIdx.x;
    const T* kh = k + ((i64)b * Hkv + kvh) * Tk * D;
    const T* vh = v + ((i64)b * Hkv + kvh) * Tk * D;
    const bool* keep_b = keep + (has_mask ? (i64)b * Tk : 0);
    load_rows(qs, q + (i64)bh * Tq * D, q0, br, Tq, D, scale);
    for (int r = tid; r < br; r += nt) {
        m_s[r] = neg_inf<T>();
        l_s[r] = T(0);
    }
    T acc[FLASH_MAX_OUT];
#pragma unroll
    for (int n = 0; n < FLASH_MAX_OUT; ++n) acc[n] = T(0);
    const int k_end = causal ? min(Tk, q0 + br) : Tk;  // causal: later keys are invisible
    for (int k0 = 0; k0 < k_end; k0 += bc) {
        const int nk = min(bc, k_end - k0);
        __syncthreads();  // the previous tile's V and P are no longer read
        load_rows(kvs, kh, k0, nk, Tk, D, T(1));
        __syncthreads();
        for (int e = tid; e < br * bc; e += nt) {  // S = (tau Q) K^T, -inf where invisible
            const int r = e / bc, c = e - r * bc, i = q0 + r;
            T s = neg_inf<T>();
            if (c < nk && i < Tq && key_visible(i, k0 + c, causal, has_mask, keep_b))
                s = dot_rows(qs + r * ld, kvs + c * ld, D);
            ps[r * lp + c] = s;
        }
        __syncthreads();
        load_rows(kvs, vh, k0, nk, Tk, D, T(1));  // K is no longer read
        for (int r = tid; r < br; r += nt) {      // the online softmax, one thread per row
            T* pr = ps + r * lp;
            const T m_old = m_s[r];
            T m_new = m_old;
            for (int c = 0; c < nk; ++c) m_new = d_max(m_new, pr[c]);
            T alpha = T(1), sum = T(0);
            if (m_new == neg_inf<T>()) {  // nothing visible so far: P = 0
                for (int c = 0; c < nk; ++c) pr[c] = T(0);
            } else {
                alpha = d_exp(m_old - m_new);  // m_old = -inf: 0
                for (int c = 0; c < nk; ++c) {
                    const T p = d_exp(pr[c] - m_new);  // S = -inf: 0
                    pr[c] = p;
                    sum += p;
                }
            }
            m_s[r] = m_new;
            l_s[r] = l_s[r] * alpha + sum;
            a_s[r] = alpha;
        }
        __syncthreads();
#pragma unroll
        for (int n = 0; n < FLASH_MAX_OUT; ++n) {  // acc = alpha acc + P V
            const int e = tid + n * nt;
            if (e < br * D) {
                const int r = e / D, d = e - r * D;
                const T* pr = ps + r * lp;
                T s = T(0);
                for (int c = 0; c < nk; ++c) s += pr[c] * kvs[c * ld + d];
                acc[n] = acc[n] * a_s[r] + s;
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int n = 0; n < FLASH_MAX_OUT; ++n) {
        const int e = tid + n * nt;
        if (e < br * D) {
            const int r = e / D, d = e - r * D, i = q0 + r;
            if (i < Tq) {
                const T l = l_s[r];
                o[((i64)bh * Tq + i) * D + d] = (l == T(0)) ? T(0) : acc[n] / l;
            }
        }
    }
    for (int r = tid; r < br; r += nt) {
        const int i = q0 + r;
        if (i < Tq) {
            const T l = l_s[r];
            lse[(i64)bh * Tq + i] = (l == T(0)) ? neg_inf<T>() : m_s[r] + d_log(l);
        }
    }
}

// P_rc and dS_rc of one (query r, key c) pair of the current tiles; 0 where invisible.
template <typename T>
__device__ __forceinline__ void prob_and_dscore(const T* qr, const T* dor, const T* kc,
                                                const T* vc, T lse_i, T delta_i, int D,
                                                T scale, T& p, T& ds) {
    p = d_exp(dot_rows(qr, kc, D) * scale - lse_i);  // P = exp(S - lse)
    ds = p * (dot_rows(dor, vc, D) - delta_i);         // dS = P (dP - delta)
}

template <typename T>
__device__ void flash_backward_dkdv_tiles(const T* __restrict__ q, const T* __restrict__ k,
                                          const T* __restrict__ v, const T* __restrict__ dout,
                                          const T* __restrict__ lse, const T* __restrict__ delta,
                                          const bool* __restrict__ keep, T* __restrict__ dk_part,
                                          T* __restrict__ dv_part, int H, int Hkv, int Tq, int Tk,
                                          int D, int br, int bc, int causal, int has_mask,
                                          T scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int ld = D + 1, lp = bc + 1;
    T* ks = reinterpret_cast<T*>(smem_raw);  // [bc, D + 1]
    T* vs = ks + bc * ld;                    // [bc, D + 1]
    T* qs = vs + bc * ld;                    // [br, D + 1]
    T* dos = qs + br * ld;                   // [br, D + 1]
    T* ps = dos + br * ld;                   // [br, bc + 1] P
    T* dss = ps + br * lp;                   // [br, bc + 1] dS
    T* lse_s = dss + br * lp;                // [br]
    T* delta_s = lse_s + br;                 // [br]
    const int bh = blockIdx.x, b = bh / H, h = bh % H, kvh = h / (H / Hkv);
    const int k0 = blockIdx.y * bc;
    const int nt = blockDim.x, tid = threadIdx.x;
    const T* qh = q + (i64)bh * Tq * D;
    const T* doh = dout + (i64)bh * Tq * D;
    const bool* keep_b = keep + (has_mask ? (i64)b * Tk : 0);
    load_rows(ks, k + ((i64)b * Hkv + kvh) * Tk * D, k0, bc, Tk, D, T(1));
    load_rows(vs, v + ((i64)b * Hkv + kvh) * Tk * D, k0, bc, Tk, D, T(1));
    T dk[FLASH_MAX_OUT], dv[FLASH_MAX_OUT];
#pragma unroll
    for (int n = 0; n < FLASH_MAX_OUT; ++n) {
        dk[n] = T(0);
        dv[n] = T(0);
    }
    const int t_start = causal ? (k0 / br) * br : 0;  // causal: earlier queries see no key here
    for (int t0 = t_start; t0 < Tq; t0 += br) {
        __syncthreads();  // the previous query tile is no longer read
        load_rows(qs, qh, t0, br, Tq, D, T(1));
        load_rows(dos, doh, t0, br, Tq, D, T(1));
        for (int r = tid; r < br; r += nt) {
            const int i = t0 + r;
            lse_s[r] = i < Tq ? lse[(i64)bh * Tq + i] : neg_inf<T>();
            delta_s[r] = i < Tq ? delta[(i64)bh * Tq + i] : T(0);
        }
        __syncthreads();
        for (int e = tid; e < br * bc; e += nt) {
            const int r = e / bc, c = e - r * bc, i = t0 + r, j = k0 + c;
            T p = T(0), ds = T(0);
            if (i < Tq && j < Tk && lse_s[r] != neg_inf<T>() &&
                key_visible(i, j, causal, has_mask, keep_b))
                prob_and_dscore(qs + r * ld, dos + r * ld, ks + c * ld, vs + c * ld, lse_s[r],
                                delta_s[r], D, scale, p, ds);
            ps[r * lp + c] = p;
            dss[r * lp + c] = ds;
        }
        __syncthreads();
        const int nq = min(br, Tq - t0);
#pragma unroll
        for (int n = 0; n < FLASH_MAX_OUT; ++n) {  // dV += P^T dO, dK += dS^T Q
            const int e = tid + n * nt;
            if (e < bc * D) {
                const int c = e / D, d = e - c * D;
                T sv = T(0), sk = T(0);
                for (int r = 0; r < nq; ++r) {
                    sv += ps[r * lp + c] * dos[r * ld + d];
                    sk += dss[r * lp + c] * qs[r * ld + d];
                }
                dv[n] += sv;
                dk[n] += sk;
            }
        }
    }
#pragma unroll
    for (int n = 0; n < FLASH_MAX_OUT; ++n) {
        const int e = tid + n * nt;
        if (e < bc * D) {
            const int c = e / D, d = e - c * D, j = k0 + c;
            if (j < Tk) {
                dk_part[((i64)bh * Tk + j) * D + d] = dk[n] * scale;
                dv_part[((i64)bh * Tk + j) * D + d] = dv[n];
            }
        }
    }
}

template <typename T>
__device__ void flash_backward_dq_tiles(const T* __restrict__ q, const T* __restrict__ k,
                                        const T* __restrict__ v, const T* __restrict__ dout,
                                        const T* __restrict__ lse, const T* __restrict__ delta,
                                        const bool* __restrict__ keep, T* __restrict__ dq, int H,
                                        int Hkv, int Tq, int Tk, int D, int br, int bc, int causal,
                                        int has_mask, T scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int ld = D + 1, lp = bc + 1;
    T* qs = reinterpret_cast<T*>(smem_raw);  // [br, D + 1]
    T* dos = qs + br * ld;                   // [br, D + 1]
    T* ks = dos + br * ld;                   // [bc, D + 1]
    T* vs = ks + bc * ld;                    // [bc, D + 1]
    T* dss = vs + bc * ld;                   // [br, bc + 1] dS
    T* lse_s = dss + br * lp;                // [br]
    T* delta_s = lse_s + br;                 // [br]
    const int bh = blockIdx.x, b = bh / H, h = bh % H, kvh = h / (H / Hkv);
    const int q0 = blockIdx.y * br;
    const int nt = blockDim.x, tid = threadIdx.x;
    const T* kh = k + ((i64)b * Hkv + kvh) * Tk * D;
    const T* vh = v + ((i64)b * Hkv + kvh) * Tk * D;
    const bool* keep_b = keep + (has_mask ? (i64)b * Tk : 0);
    load_rows(qs, q + (i64)bh * Tq * D, q0, br, Tq, D, T(1));
    load_rows(dos, dout + (i64)bh * Tq * D, q0, br, Tq, D, T(1));
    for (int r = tid; r < br; r += nt) {
        const int i = q0 + r;
        lse_s[r] = i < Tq ? lse[(i64)bh * Tq + i] : neg_inf<T>();
        delta_s[r] = i < Tq ? delta[(i64)bh * Tq + i] : T(0);
    }
    T acc[FLASH_MAX_OUT];
#pragma unroll
    for (int n = 0; n < FLASH_MAX_OUT; ++n) acc[n] = T(0);
    const int k_end = causal ? min(Tk, q0 + br) : Tk;
    for (int k0 = 0; k0 < k_end; k0 += bc) {
        const int nk = min(bc, k_end - k0);
        __syncthreads();  // the previous key tile and dS are no longer read
        load_rows(ks, kh, k0, nk, Tk, D, T(1));
        load_rows(vs, vh, k0, nk, Tk, D, T(1));
        __syncthreads();
        for (int e = tid; e < br * bc; e += nt) {
            const int r = e / bc, c = e - r * bc, i = q0 + r, j = k0 + c;
            T p = T(0), ds = T(0);
            if (c < nk && i < Tq && lse_s[r] != neg_inf<T>() &&
                key_visible(i, j, causal, has_mask, keep_b))
                prob_and_dscore(qs + r * ld, dos + r * ld, ks + c * ld, vs + c * ld, lse_s[r],
                                delta_s[r], D, scale, p, ds);
            dss[r * lp + c] = ds;
        }
        __syncthreads();
#pragma unroll
        for (int n = 0; n < FLASH_MAX_OUT; ++n) {  // dQ += dS K
            const int e = tid + n * nt;
            if (e < br * D) {
                const int r = e / D, d = e - r * D;
                T s = T(0);
                for (int c = 0; c < nk; ++c) s += dss[r * lp + c] * ks[c * ld + d];
                acc[n] += s;
            }
        }
    }
#pragma unroll
    for (int n = 0; n < FLASH_MAX_OUT; ++n) {
        const int e = tid + n * nt;
        if (e < br * D) {
            const int r = e / D, d = e - r * D, i = q0 + r;
            if (i < Tq) dq[((i64)bh * Tq + i) * D + d] = acc[n] * scale;
        }
    }
}

// ---------------------------------------------------------------- entry points
// grid (B*H, ceil(rows / own tile)); block (threads,); dynamic shared memory as in the header
#define FLASH_ENTRIES(T, S)                                                                    \
    extern "C" __global__ void flash_forward_##S(                                              \
        const T* q, const T* k, const T* v, const bool* keep, T* o, T* lse, int H, int Hkv,    \
        int Tq, int Tk, int D, int br, int bc, int causal, int has_mask, T scale) {            \
        flash_forward_tiles<T>(q, k, v, keep, o, lse, H, Hkv, Tq, Tk, D, br, bc, causal,       \
                               has_mask, scale);                                               \
    }                                                                                          \
    extern "C" __global__ void flash_backward_dkdv_##S(                                        \
        const T* q, const T* k, const T* v, const T* dout, const T* lse, const T* delta,       \
        const bool* keep, T* dk_part, T* dv_part, int H, int Hkv, int Tq, int Tk, int D,       \
        int br, int bc, int causal, int has_mask, T scale) {                                   \
        flash_backward_dkdv_tiles<T>(q, k, v, dout, lse, delta, keep, dk_part, dv_part, H,     \
                                     Hkv, Tq, Tk, D, br, bc, causal, has_mask, scale);         \
    }                                                                                          \
    extern "C" __global__ void flash_backward_dq_##S(                                          \
        const T* q, const T* k, const T* v, const T* dout, const T* lse, const T* delta,       \
        const bool* keep, T* dq, int H, int Hkv, int Tq, int Tk, int D, int br, int bc,        \
        int causal, int has_mask, T scale) {                                                   \
        flash_backward_dq_tiles<T>(q, k, v, dout, lse, delta, keep, dq, H, Hkv, Tq, Tk, D, br, \
                                   bc, causal, has_mask, scale);                               \
    }

FLASH_ENTRIES(float, f32)
FLASH_ENTRIES(double, f64)
