// AdamW: one fused in-place pass over a parameter, PyTorch's update order (adamw.py):
//   p = p * (1 - lr wd)
//   m = m + (1 - b1) (g - m)                      (torch's lerp toward g; for 1 - b1 >= 0.5
//                                                  it is g - (g - m) b1)
//   v = v b2 + (1 - b2) g g
//   p = p + (-lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The scalars (decay = 1 - lr wd, w1 = 1 - b1, b2, w2 = 1 - b2, neg_step = -lr/(1 - b1^t),
// bc2_sqrt = sqrt(1 - b2^t), eps) arrive precomputed. One thread per element.
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

// grid = (ceil(n / 256),), block = (256,)
#define ADAMW_ENTRIES(T, S)                                                                    \
    extern "C" __global__ void adamw_##S(T* p, const T* g, T* m, T* v, i64 n, T decay, T w1,   \
                                         T b2, T w2, T neg_step, T bc2_sqrt, T eps) {          \
        adamw_elem<T>(p, g, m, v, n, decay, w1, b2, w2, neg_step, bc2_sqrt, eps);              \
    }

ADAMW_ENTRIES(float, f32)
ADAMW_ENTRIES(double, f64)
