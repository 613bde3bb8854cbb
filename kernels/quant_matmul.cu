// Packed-weight matmul: y = x W_hat^T with W_hat decoded from low-bit codes on the fly.
//
// W [N, K] is stored as codes of `bits` bits (2, 4 or 8), 8 / bits codes a byte, the first
// in the high bits, rows of row_bytes bytes; per-(row, group) scales s and zeros z [N, G]
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
    const int per = 8 / bits;
    const int mask = (1 << bits) - 1;
    const unsigned char* row = packed + (i64)n * row_bytes;
    const T* xr = x + (i64)r * K;
    T acc = 0;
    for (int j = 0; j < row_bytes; ++j) {
        const int byte = row[j];
        for (int t = 0; t < per; ++t) {
            const int k = j * per + t;
            if (k >= K) break;
            const int q = (byte >> ((per - 1 - t) * bits)) & mask;
            const int gi = k / group_size;
            const T w = (table[q] - zeros[(i64)n * G + gi]) * scales[(i64)n * G + gi];
            acc += xr[k] * w;
        }
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
