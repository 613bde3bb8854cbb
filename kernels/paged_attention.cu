// Paged decode attention (math in paged_attention.py): one query per sequence, keys and
// values read in place through the sequence's block table.
//
// Layout: q, out [N, H, D]; k_cache, v_cache [num_blocks, Hkv, S, D]; block_tables
// [N, max_blocks] (int64, physical block of logical block b); context_lens [N] (int64, >= 1,
// checked by the wrapper). Token t of sequence n lives at
// k_cache[block_tables[n, t / S], kv, t % S]. Query head h reads kv head h / (H / Hkv).
//
// paged_decode: grid (N * H), one block per (sequence n, query head h), blockDim.x threads
// (a power of two). q (unscaled) and the [D] accumulator live in shared memory. The keys are
// streamed in tiles of blockDim.x tokens, thread c owning token t0 + c of the tile:
//
//     s_t   = scale (q . k_t)                                (t >= L: -inf)
//     m'    = max(m, max_tile s_t),  alpha = exp(m - m'),  p_t = exp(s_t - m')
//     l     = alpha l + sum_tile p_t                         (block reductions)
//     acc_d = alpha acc_d + sum_tile p_t v_t,d               (thread owns d = tid + j bd)
//
// and at the end out = acc / l. The first tile always holds token 0 (L >= 1), so m' is
// finite from the first tile on and alpha = exp(-inf) = 0 there. Deterministic: fixed tiles
// and a fixed reduction tree; the order of additions differs from the reference's (a GEMM
// over the gathered keys), so the two agree to rounding, not bitwise.
#include "cuda_common.cuh"

template <typename T>
__device__ void paged_decode_block(const T* __restrict__ q, const T* __restrict__ k_cache,
                                   const T* __restrict__ v_cache,
                                   const i64* __restrict__ block_tables,
                                   const i64* __restrict__ context_lens, T* __restrict__ out,
                                   int H, int Hkv, int S, int D, int max_blocks, T scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* qs = reinterpret_cast<T*>(smem_raw);  // [D] the query
    T* acc = qs + D;                         // [D] unnormalized output
    T* ps = acc + D;                         // [blockDim.x] p_t of the current tile
    T* red = ps + blockDim.x;                // [blockDim.x] reduction scratch
    const int tid = threadIdx.x, bd = blockDim.x;
    const int n = blockIdx.x / H, h = blockIdx.x - (blockIdx.x / H) * H;
    const int kv = h / (H / Hkv);
    const i64 L = context_lens[n];
    const i64* table = block_tables + (i64)n * max_blocks;
    const i64 row = ((i64)n * H + h) * D;
    for (int d = tid; d < D; d += bd) {
        qs[d] = q[row + d];
        acc[d] = T(0);
    }
    __syncthreads();
    T m = neg_inf<T>(), l = T(0);
    for (i64 t0 = 0; t0 < L; t0 += bd) {
        const i64 t = t0 + tid;
        T s = neg_inf<T>();
        if (t < L) {
            const T* kr = k_cache + ((table[t / S] * Hkv + kv) * S + t % S) * D;  // [D]
            T dot = T(0);
            for (int d = 0; d < D; ++d) dot += qs[d] * kr[d];
            s = dot * scale;
        }
        const T m_new = d_max(m, block_reduce(s, red, MaxOp()));
        const T alpha = d_exp(m - m_new);
        const T p = (t < L) ? d_exp(s - m_new) : T(0);
        ps[tid] = p;
        l = alpha * l + block_reduce(p, red, SumOp());  // its barriers publish ps
        const int n_tile = (L - t0 < bd) ? int(L - t0) : bd;
        for (int d = tid; d < D; d += bd) {
            T a = acc[d] * alpha;
            for (int c = 0; c < n_tile; ++c) {
                const i64 tt = t0 + c;
                a += ps[c] * v_cache[((table[tt / S] * Hkv + kv) * S + tt % S) * D + d];
            }
            acc[d] = a;
        }
        m = m_new;
        __syncthreads();  // ps is rewritten by the next tile
    }
    for (int d = tid; d < D; d += bd) out[row + d] = acc[d] / l;
}

#define PAGED_ENTRY(T, S_)                                                                      \
    extern "C" __global__ void paged_decode_##S_(                                               \
        const T* q, const T* k_cache, const T* v_cache, const i64* block_tables,                \
        const i64* context_lens, T* out, int H, int Hkv, int S, int D, int max_blocks,          \
        T scale) {                                                                              \
        paged_decode_block<T>(q, k_cache, v_cache, block_tables, context_lens, out, H, Hkv, S,  \
                              D, max_blocks, scale);                                            \
    }

PAGED_ENTRY(float, f32)
PAGED_ENTRY(double, f64)
