// Packed-weight matmul: y = x W_hat^T with W_hat decoded from low-bit codes on the fly.
//
// W [N, K] is stored as codes of `bits` bits (1 to 8), each row a big-endian bit stream of
// row_bytes bytes: code k lies in the two bytes from j = (k bits) >> 3, at off = (k bits) & 7,
//   q = ((row[j] << 8 | row[j + 1]) >> (16 - bits - off)) & (2^bits - 1)
// (for 2, 4, 8 bits: 8 / bits codes a byte, the first in the high bits);
// per-(row, group) scales s and zeros z [N, G]
// over groups of group_size input columns; a decode table of 2^bits values:
//   w_hat[n, k] = (table[q[n, k]] - z[n, k / g]) * s[n, k / g]
//   y[r, n]     = sum_k x[r, k] w_hat[n, k]
// One thread per output (r, n): the thread walks its row of packed bytes, decoding each code
// as it multiplies, so no float copy of W is ever written. The threads of a block share r
// and read x[r, :] together (a broadcast). grid = (ceil(N / 128), R), block = (128,).
#include "cuda_common.cuh"

template <typename T>
__device__ void quant_matmul_out(const T* __restrict__ x, const unsigned char* __restrict__ packed,
                                 const T* __restrict__ scales, const T* __restrict__ zeros,
                                 const T* __restrict__ table, T* __restrict__ y, int R, int N,
                                 int K, int row_bytes, int bits, int group_size, int G) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int r = blockIdx.y;
    if (n >= N || r >= R) return;
    const int mask = (1 << bits) - 1;
    const unsigned char* row = packed + (i64)n * row_bytes;
    const T* xr = x + (i64)r * K;
    T acc = 0;
    for (int gi = 0; gi < G; ++gi) {  // the group's scale and zero read once
        const int k0 = gi * group_size;
        const int k1 = k0 + group_size < K ? k0 + group_size : K;
        const T z = zeros[(i64)n * G + gi];
        T part = 0;
        for (int k = k0; k < k1; ++k) {
            const int pos = k * bits;
            const int j = pos >> 3;
            int window = (int)row[j] << 8;
            if (j + 1 < row_bytes) window |= row[j + 1];
            const int q = (window >> (16 - bits - (pos & 7))) & mask;
            part += xr[k] * (table[q] - z);
        }
        acc += part * scales[(i64)n * G + gi];
    }
    y[(i64)r * N + n] = acc;
}

#define QUANT_ENTRIES(T, S)                                                                    \
    extern "C" __global__ void quant_matmul_##S(const T* x, const unsigned char* packed,       \
                                                const T* scales, const T* zeros,               \
                                                const T* table, T* y, int R, int N, int K,     \
                                                int row_bytes, int bits, int group_size,       \
                                                int G) {                                       \
        quant_matmul_out<T>(x, packed, scales, zeros, table, y, R, N, K, row_bytes, bits,      \
                            group_size, G);                                                    \
    }

QUANT_ENTRIES(float, f32)
QUANT_ENTRIES(double, f64)
