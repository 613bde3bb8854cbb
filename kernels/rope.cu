// Rotary position embedding (RoPE), forward and backward, both pair layouts.
//
// Each row r of x [R, D] rotates D/2 pairs (a_i, b_i) by the angle whose cosine and sine
// are cos[p, i], sin[p, i], p = r % P (the tables [P, D/2] repeat over the leading rows):
//   a' = a cos - b sin,   b' = b cos + a sin
// half-split layout (NeoX/Llama): a_i = x[i], b_i = x[i + D/2]; interleaved (GPT-J):
// a_i = x[2i], b_i = x[2i + 1]. The backward is the rotation by -angle (sign = -1), since a
// rotation's transpose is its inverse. One thread per (row, pair).
#include "cuda_common.cuh"

template <typename T>
__device__ void rope_pair(const T* __restrict__ x, const T* __restrict__ cosine,
                          const T* __restrict__ sine, T* __restrict__ y, i64 R, int D, i64 P, T sign,
                          int interleaved) {
    const int half = D / 2;
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= R * half) return;
    const i64 r = idx / half;
    const int i = (int)(idx - r * half);
    const i64 p = r % P;
    const T c = cosine[p * half + i], s = sign * sine[p * half + i];
    const i64 ia = interleaved ? r * D + 2 * i : r * D + i;
    const i64 ib = interleaved ? ia + 1 : ia + half;
    const T a = x[ia], b = x[ib];
    y[ia] = a * c - b * s;
    y[ib] = b * c + a * s;
}

// grid = (ceil(R * D/2 / 256),), block = (256,)
#define ROPE_ENTRIES(T, S)                                                                     \
    extern "C" __global__ void rope_##S(const T* x, const T* cosine, const T* sine, T* y,      \
                                        i64 R, int D, i64 P, T sign, int interleaved) {        \
        rope_pair<T>(x, cosine, sine, y, R, D, P, sign, interleaved);                          \
    }

ROPE_ENTRIES(float, f32)
ROPE_ENTRIES(double, f64)
