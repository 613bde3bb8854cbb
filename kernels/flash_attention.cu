// FlashAttention forward and backward (math in attention.py).
//
// Layout: q, o, do, dq [B, H, Tq, D]; k, v [B, Hkv, Tk, D]; lse, delta [B, H, Tq];
// keep [B, Tk] (bool, read only when has_mask); dk_part, dv_part [B, H, Tk, D] (one per
// query head; the caller sums each GQA group). Query head h reads kv head h / (H / Hkv).
// Key j is visible to query i iff (!causal || j <= i) && (!has_mask || keep[b, j]).
//
// flash_forward: grid (B*H, ceil(Tq / blockDim.x)); one thread per query row. K and V
// tiles of tile_k rows are staged in dynamic shared memory [2][tile_k][D]; each thread
// runs the online softmax over the keys one at a time:
//     s > m:  alpha = exp(m - s), l = l alpha + 1, acc = acc alpha + v_j, m = s
//     else:   p = exp(s - m),     l = l + p,       acc = acc + p v_j
// and writes o = acc / l, lse = m + log l (o = 0, lse = -inf for a row with no key).
// flash_backward_dkdv: grid (B*H, ceil(Tk / blockDim.x)); one thread per key row j, with
// Q and dO tiles staged in shared memory:
//     p = exp(s_ij - lse_i), dv_j += p dO_i, dp = dO_i . v_j, ds = p (dp - delta_i),
//     dk_j += tau ds q_i
// flash_backward_dq: grid (B*H, ceil(Tq / blockDim.x)); one thread per query row, K and V
// tiles in shared memory: dq_i += tau ds_ij k_j. (Two passes instead of atomics: exact
// and deterministic, at the price of recomputing s and dp.)
// Head size D <= MAX_D; per-thread vectors live in registers/local memory.
#include "cuda_common.cuh"

#define MAX_D 256

__device__ __forceinline__ bool key_visible(int i, int j, int causal, int has_mask,
                                            const bool* __restrict__ keep_b) {
    return (!causal || j <= i) && (!has_mask || keep_b[j]);
}

template <typename T>
__device__ void flash_forward_rows(const T* __restrict__ q, const T* __restrict__ k,
                                   const T* __restrict__ v, const bool* __restrict__ keep,
                                   T* __restrict__ o, T* __restrict__ lse, int H, int Hkv, int Tq,
                                   int Tk, int D, int tile_k, int causal, int has_mask, T scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* ks = reinterpret_cast<T*>(smem_raw);  // [tile_k, D]
    T* vs = ks + (i64)tile_k * D;            // [tile_k, D]
    const int bh = blockIdx.x, b = bh / H, h = bh % H, kvh = h / (H / Hkv);
    const int q0 = blockIdx.y * blockDim.x;
    const int i = q0 + threadIdx.x;  // this thread's query row
    const bool active = i < Tq;
    const T* qi = q + ((i64)bh * Tq + (active ? i : 0)) * D;
    const T* kh = k + ((i64)b * Hkv + kvh) * Tk * D;
    const T* vh = v + ((i64)b * Hkv + kvh) * Tk * D;
    const bool* keep_b = keep + (has_mask ? (i64)b * Tk : 0);
    T qr[MAX_D], acc[MAX_D];
    for (int d = 0; d < D; ++d) {
        qr[d] = active ? qi[d] * scale : T(0);
        acc[d] = T(0);
    }
    T m = neg_inf<T>(), l = T(0);
    // causal: no query of this block sees keys at or beyond q0 + blockDim.x
    const int k_end = causal ? min(Tk, q0 + (int)blockDim.x) : Tk;
    for (int k0 = 0; k0 < k_end; k0 += tile_k) {
        const int nk = min(tile_k, k_end - k0);
        __syncthreads();  // the previous tile is no longer read
        for (int e = threadIdx.x; e < nk * D; e += blockDim.x) {
            ks[e] = kh[(i64)k0 * D + e];
            vs[e] = vh[(i64)k0 * D + e];
        }
        __syncthreads();
        if (!active) continue;
        for (int j = 0; j < nk; ++j) {
            if (!key_visible(i, k0 + j, causal, has_mask, keep_b)) continue;
            const T* kj = ks + (i64)j * D;
            const T* vj = vs + (i64)j * D;
            T s = T(0);
            for (int d = 0; d < D; ++d) s += qr[d] * kj[d];
            if (s > m) {
                const T alpha = d_exp(m - s);  // m = -inf: alpha = 0
                l = l * alpha + T(1);
                for (int d = 0; d < D; ++d) acc[d] = acc[d] * alpha + vj[d];
                m = s;
            } else {
                const T p = d_exp(s - m);
                l += p;
                for (int d = 0; d < D; ++d) acc[d] += p * vj[d];
            }
        }
    }
    if (!active) return;
    T* oi = o + ((i64)bh * Tq + i) * D;
    if (l == T(0)) {
        for (int d = 0; d < D; ++d) oi[d] = T(0);
        lse[(i64)bh * Tq + i] = neg_inf<T>();
    } else {
        const T inv = T(1) / l;
        for (int d = 0; d < D; ++d) oi[d] = acc[d] * inv;
        lse[(i64)bh * Tq + i] = m + d_log(l);
    }
}

template <typename T>
__device__ void flash_backward_dkdv_rows(const T* __restrict__ q, const T* __restrict__ k,
                                         const T* __restrict__ v, const T* __restrict__ dout,
                                         const T* __restrict__ lse, const T* __restrict__ delta,
                                         const bool* __restrict__ keep, T* __restrict__ dk_part,
                                         T* __restrict__ dv_part, int H, int Hkv, int Tq, int Tk,
                                         int D, int tile_q, int causal, int has_mask, T scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* qs = reinterpret_cast<T*>(smem_raw);  // [tile_q, D]
    T* dos = qs + (i64)tile_q * D;           // [tile_q, D]
    const int bh = blockIdx.x, b = bh / H, h = bh % H, kvh = h / (H / Hkv);
    const int k0 = blockIdx.y * blockDim.x;
    const int j = k0 + threadIdx.x;  // this thread's key row
    const bool active = j < Tk;
    const T* kj = k + (((i64)b * Hkv + kvh) * Tk + (active ? j : 0)) * D;
    const T* vj = v + (((i64)b * Hkv + kvh) * Tk + (active ? j : 0)) * D;
    const T* qh = q + (i64)bh * Tq * D;
    const T* doh = dout + (i64)bh * Tq * D;
    const T* lh = lse + (i64)bh * Tq;
    const T* dh = delta + (i64)bh * Tq;
    const bool* keep_b = keep + (has_mask ? (i64)b * Tk : 0);
    const bool visible_key = active && (!has_mask || keep_b[j]);
    T kr[MAX_D], vr[MAX_D], dk[MAX_D], dv[MAX_D];
    for (int d = 0; d < D; ++d) {
        kr[d] = active ? kj[d] : T(0);
        vr[d] = active ? vj[d] : T(0);
        dk[d] = T(0);
        dv[d] = T(0);
    }
    // causal: queries before k0 see none of this block's keys
    const int q_start = causal ? (k0 / tile_q) * tile_q : 0;
    for (int t0 = q_start; t0 < Tq; t0 += tile_q) {
        const int nq = min(tile_q, Tq - t0);
        __syncthreads();
        for (int e = threadIdx.x; e < nq * D; e += blockDim.x) {
            qs[e] = qh[(i64)t0 * D + e];
            dos[e] = doh[(i64)t0 * D + e];
        }
        __syncthreads();
        if (!visible_key) continue;
        for (int r = 0; r < nq; ++r) {
            const int i = t0 + r;
            const T li = lh[i];
            if ((causal && j > i) || li == neg_inf<T>()) continue;
            const T* qi = qs + (i64)r * D;
            const T* doi = dos + (i64)r * D;
            T s = T(0), dp = T(0);
            for (int d = 0; d < D; ++d) {
                s += qi[d] * kr[d];
                dp += doi[d] * vr[d];
            }
            const T p = d_exp(s * scale - li);
            const T ds = p * (dp - dh[i]);
            for (int d = 0; d < D; ++d) {
                dv[d] += p * doi[d];
                dk[d] += ds * qi[d];
            }
        }
    }
    if (!active) return;
    T* dkj = dk_part + ((i64)bh * Tk + j) * D;
    T* dvj = dv_part + ((i64)bh * Tk + j) * D;
    for (int d = 0; d < D; ++d) {
        dkj[d] = dk[d] * scale;
        dvj[d] = dv[d];
    }
}

template <typename T>
__device__ void flash_backward_dq_rows(const T* __restrict__ q, const T* __restrict__ k,
                                       const T* __restrict__ v, const T* __restrict__ dout,
                                       const T* __restrict__ lse, const T* __restrict__ delta,
                                       const bool* __restrict__ keep, T* __restrict__ dq, int H,
                                       int Hkv, int Tq, int Tk, int D, int tile_k, int causal,
                                       int has_mask, T scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* ks = reinterpret_cast<T*>(smem_raw);  // [tile_k, D]
    T* vs = ks + (i64)tile_k * D;            // [tile_k, D]
    const int bh = blockIdx.x, b = bh / H, h = bh % H, kvh = h / (H / Hkv);
    const int q0 = blockIdx.y * blockDim.x;
    const int i = q0 + threadIdx.x;
    const bool active = i < Tq;
    const T* kh = k + ((i64)b * Hkv + kvh) * Tk * D;
    const T* vh = v + ((i64)b * Hkv + kvh) * Tk * D;
    const T* qi = q + ((i64)bh * Tq + (active ? i : 0)) * D;
    const T* doi = dout + ((i64)bh * Tq + (active ? i : 0)) * D;
    const bool* keep_b = keep + (has_mask ? (i64)b * Tk : 0);
    const T li = active ? lse[(i64)bh * Tq + i] : neg_inf<T>();
    const T di = active ? delta[(i64)bh * Tq + i] : T(0);
    T qr[MAX_D], dor[MAX_D], acc[MAX_D];
    for (int d = 0; d < D; ++d) {
        qr[d] = active ? qi[d] : T(0);
        dor[d] = active ? doi[d] : T(0);
        acc[d] = T(0);
    }
    const int k_end = causal ? min(Tk, q0 + (int)blockDim.x) : Tk;
    for (int k0 = 0; k0 < k_end; k0 += tile_k) {
        const int nk = min(tile_k, k_end - k0);
        __syncthreads();
        for (int e = threadIdx.x; e < nk * D; e += blockDim.x) {
            ks[e] = kh[(i64)k0 * D + e];
            vs[e] = vh[(i64)k0 * D + e];
        }
        __syncthreads();
        if (!active || li == neg_inf<T>()) continue;
        for (int c = 0; c < nk; ++c) {
            if (!key_visible(i, k0 + c, causal, has_mask, keep_b)) continue;
            const T* kj = ks + (i64)c * D;
            const T* vj = vs + (i64)c * D;
            T s = T(0), dp = T(0);
            for (int d = 0; d < D; ++d) {
                s += qr[d] * kj[d];
                dp += dor[d] * vj[d];
            }
            const T p = d_exp(s * scale - li);
            const T ds = p * (dp - di) * scale;
            for (int d = 0; d < D; ++d) acc[d] += ds * kj[d];
        }
    }
    if (!active) return;
    T* dqi = dq + ((i64)bh * Tq + i) * D;
    for (int d = 0; d < D; ++d) dqi[d] = acc[d];
}

// ---------------------------------------------------------------- entry points
#define FLASH_ENTRIES(T, S)                                                                    \
    extern "C" __global__ void flash_forward_##S(                                              \
        const T* q, const T* k, const T* v, const bool* keep, T* o, T* lse, int H, int Hkv,    \
        int Tq, int Tk, int D, int tile_k, int causal, int has_mask, T scale) {                \
        flash_forward_rows<T>(q, k, v, keep, o, lse, H, Hkv, Tq, Tk, D, tile_k, causal,        \
                              has_mask, scale);                                                \
    }                                                                                          \
    extern "C" __global__ void flash_backward_dkdv_##S(                                        \
        const T* q, const T* k, const T* v, const T* dout, const T* lse, const T* delta,       \
        const bool* keep, T* dk_part, T* dv_part, int H, int Hkv, int Tq, int Tk, int D,       \
        int tile_q, int causal, int has_mask, T scale) {                                       \
        flash_backward_dkdv_rows<T>(q, k, v, dout, lse, delta, keep, dk_part, dv_part, H, Hkv, \
                                    Tq, Tk, D, tile_q, causal, has_mask, scale);               \
    }                                                                                          \
    extern "C" __global__ void flash_backward_dq_##S(                                          \
        const T* q, const T* k, const T* v, const T* dout, const T* lse, const T* delta,       \
        const bool* keep, T* dq, int H, int Hkv, int Tq, int Tk, int D, int tile_k,            \
        int causal, int has_mask, T scale) {                                                   \
        flash_backward_dq_rows<T>(q, k, v, dout, lse, delta, keep, dq, H, Hkv, Tq, Tk, D,      \
                                  tile_k, causal, has_mask, scale);                            \
    }

FLASH_ENTRIES(float, f32)
FLASH_ENTRIES(double, f64)
