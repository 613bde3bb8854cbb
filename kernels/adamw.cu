// AdamW: one fused in-place pass over a parameter, PyTorch's update order (adamw.py):
//   p = p * (1 - lr wd)
//   m = m + (1 - b1) (g - m)                      (torch's lerp toward g; for 1 - b1 >= 0.5
//                                                  it is g - (g - m) b1)
//   v = v b2 + (1 - b2) g g
//   p = p + (-lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The scalars (decay = 1 - lr wd, w1 = 1 - b1, b2, w2 = 1 - b2, neg_step = -lr/(1 - b1^t),
// bc2_sqrt = sqrt(1 - b2^t), eps) arrive precomputed. One thread per element.
// adamw_multi_*: every parameter of a step in one launch (a multi-tensor apply). A table of
// device pointers [p_0..p_{K-1}, g_0.., m_0.., v_0..] and the prefix sums of the tensors'
// sizes, offsets[0..K] (offsets[K] = total), sit in one int64 array; a thread finds its
// tensor by binary search on the offsets.
#include "cuda_common.cuh"

template <typename T>
__device__ void adamw_elem(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                           i64 n, T decay, T w1, T b2, T w2, T neg_step, T bc2_sqrt, T eps) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const T gi = g[i];
    const T pi = p[i] * decay;
    // torch's lerp(m, g, w1), whose formula switches at weight 0.5
    const T mi = (w1 < T(0.5)) ? m[i] + w1 * (gi - m[i]) : gi - (gi - m[i]) * (T(1) - w1);
    const T vi = v[i] * b2 + w2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + neg_step * mi / (d_sqrt(vi) / bc2_sqrt + eps);
}

template <typename T>
__device__ void adamw_multi_elem(const i64* __restrict__ table, i64 k_tensors, T decay, T w1, T b2,
                                 T w2, T neg_step, T bc2_sqrt, T eps) {
    const i64* offsets = table + 4 * k_tensors;
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= offsets[k_tensors]) return;
    i64 lo = 0, hi = k_tensors;  // invariant: offsets[lo] <= i < offsets[hi]
    while (hi - lo > 1) {
        const i64 mid = (lo + hi) / 2;
        if (offsets[mid] <= i) lo = mid; else hi = mid;
    }
    const i64 j = i - offsets[lo];
    T* p = (T*)table[lo];
    const T* g = (const T*)table[k_tensors + lo];
    T* m = (T*)table[2 * k_tensors + lo];
    T* v = (T*)table[3 * k_tensors + lo];
    const T gi = g[j];
    const T pi = p[j] * decay;
    const T mi = (w1 < T(0.5)) ? m[j] + w1 * (gi - m[j]) : gi - (gi - m[j]) * (T(1) - w1);
    const T vi = v[j] * b2 + w2 * gi * gi;
    m[j] = mi;
    v[j] = vi;
    p[j] = pi + neg_step * mi / (d_sqrt(vi) / bc2_sqrt + eps);
}

// grid = (ceil(n / 256),), block = (256,)
#define ADAMW_ENTRIES(T, S)                                                                    \
    extern "C" __global__ void adamw_##S(T* p, const T* g, T* m, T* v, i64 n, T decay, T w1,   \
                                         T b2, T w2, T neg_step, T bc2_sqrt, T eps) {          \
        adamw_elem<T>(p, g, m, v, n, decay, w1, b2, w2, neg_step, bc2_sqrt, eps);              \
    }

// grid = (ceil(total / 256),), block = (256,)
#define ADAMW_MULTI_ENTRIES(T, S)                                                              \
    extern "C" __global__ void adamw_multi_##S(const i64* table, i64 k_tensors, T decay, T w1, \
                                               T b2, T w2, T neg_step, T bc2_sqrt, T eps) {    \
        adamw_multi_elem<T>(table, k_tensors, decay, w1, b2, w2, neg_step, bc2_sqrt, eps);     \
    }

ADAMW_ENTRIES(float, f32)
ADAMW_ENTRIES(double, f64)
ADAMW_MULTI_ENTRIES(float, f32)
ADAMW_MULTI_ENTRIES(double, f64)
