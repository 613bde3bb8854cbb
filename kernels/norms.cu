// layer_norm and rms_norm over the last axis, optionally fused with a residual add.
//
// Forward, one block of ROW_THREADS threads per row h = x (+ residual) of C numbers:
//   mean = <h> (layer norm; 0 for rms norm),  var = <(h - mean)^2>,  rstd = 1/sqrt(var + eps)
//   y = (h - mean) rstd weight + bias
// Backward, per row (g = dy weight, xhat = (h - mean) rstd, <.> the row mean):
//   dx = rstd (g - <g> - xhat <g xhat>)  (+ dsummed)          (rms norm: no <g> term)
// and, in a second kernel, the column sums over rows of dy xhat (dweight) and dy (dbias):
// grid (ceil(C/32), n_chunks), block (32, 8); each block sums its chunk of rows for 32
// columns and writes one row of the [n_chunks, C] partial sums (added up by the caller).
#include "cuda_common.cuh"

template <typename T>
__device__ void norm_forward_row(const T* __restrict__ x, const T* __restrict__ residual,
                                 const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ y,
                                 T* __restrict__ summed, T* __restrict__ mean, T* __restrict__ rstd, int C,
                                 T eps, int center, int has_residual) {
    __shared__ T shm[ROW_THREADS];
    const i64 row = blockIdx.x;
    const T* h = x + row * C;  // [C] the normalized input
    if (has_residual) {
        const T* xr = x + row * C;
        const T* rr = residual + row * C;
        T* sr = summed + row * C;
        // each thread reads back only the elements it wrote: no barrier needed
        for (int c = threadIdx.x; c < C; c += blockDim.x) sr[c] = xr[c] + rr[c];
        h = sr;
    }
    T mu = T(0);
    if (center) {
        T s = T(0);
        for (int c = threadIdx.x; c < C; c += blockDim.x) s += h[c];
        mu = block_reduce(s, shm, SumOp()) / T(C);
    }
    T ss = T(0);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const T d = h[c] - mu;
        ss += d * d;
    }
    const T var = block_reduce(ss, shm, SumOp()) / T(C);
    const T rs = T(1) / d_sqrt(var + eps);
    if (threadIdx.x == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
    T* yr = y + row * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = (h[c] - mu) * rs * weight[c] + bias[c];
}

template <typename T>
__device__ void norm_backward_row(const T* __restrict__ dy, const T* __restrict__ x,
                                  const T* __restrict__ mean, const T* __restrict__ rstd,
                                  const T* __restrict__ weight, const T* __restrict__ dsummed,
                                  T* __restrict__ dx, int C, int center, int has_dsummed) {
    __shared__ T shm[ROW_THREADS];
    const i64 row = blockIdx.x;
    const T* xr = x + row * C;
    const T* dyr = dy + row * C;
    T* dxr = dx + row * C;
    const T mu = mean[row], rs = rstd[row];
    T sg = T(0), sgx = T(0);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const T g = dyr[c] * weight[c];
        sg += g;
        sgx += g * (xr[c] - mu) * rs;
    }
    const T mean_g = center ? block_reduce(sg, shm, SumOp()) / T(C) : T(0);
    const T mean_gxhat = block_reduce(sgx, shm, SumOp()) / T(C);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const T xhat = (xr[c] - mu) * rs;
        T d = rs * (dyr[c] * weight[c] - mean_g - xhat * mean_gxhat);
        if (has_dsummed) d += dsummed[row * C + c];
        dxr[c] = d;
    }
}

template <typename T>
__device__ void norm_param_grad_chunk(const T* __restrict__ dy, const T* __restrict__ x,
                                      const T* __restrict__ mean, const T* __restrict__ rstd,
                                      T* __restrict__ dweight_parts, T* __restrict__ dbias_parts, i64 R,
                                      int C) {
    __shared__ T sw[8][32];
    __shared__ T sb[8][32];
    const int tx = threadIdx.x, ty = threadIdx.y;  // column lane, row lane
    const int c = blockIdx.x * 32 + tx;
    const i64 chunk = blockIdx.y, n_chunks = gridDim.y;
    const i64 r0 = chunk * R / n_chunks, r1 = (chunk + 1) * R / n_chunks;
    T accw = T(0), accb = T(0);
    if (c < C) {
        for (i64 r = r0 + ty; r < r1; r += 8) {
            const T g = dy[r * C + c];
            accw += g * (x[r * C + c] - mean[r]) * rstd[r];
            accb += g;
        }
    }
    sw[ty][tx] = accw;
    sb[ty][tx] = accb;
    __syncthreads();
    if (ty == 0 && c < C) {
        T w = T(0), b = T(0);
        for (int k = 0; k < 8; ++k) {
            w += sw[k][tx];
            b += sb[k][tx];
        }
        dweight_parts[chunk * C + c] = w;
        dbias_parts[chunk * C + c] = b;
    }
}

// ---------------------------------------------------------------- entry points
#define NORM_ENTRIES(T, S)                                                                     \
    extern "C" __global__ void norm_forward_##S(const T* x, const T* residual, const T* weight, \
                                                const T* bias, T* y, T* summed, T* mean,       \
                                                T* rstd, int C, T eps, int center,             \
                                                int has_residual) {                            \
        norm_forward_row<T>(x, residual, weight, bias, y, summed, mean, rstd, C, eps, center,  \
                            has_residual);                                                     \
    }                                                                                          \
    extern "C" __global__ void norm_backward_##S(const T* dy, const T* x, const T* mean,       \
                                                 const T* rstd, const T* weight,               \
                                                 const T* dsummed, T* dx, int C, int center,   \
                                                 int has_dsummed) {                            \
        norm_backward_row<T>(dy, x, mean, rstd, weight, dsummed, dx, C, center, has_dsummed);  \
    }                                                                                          \
    extern "C" __global__ void norm_param_grad_##S(const T* dy, const T* x, const T* mean,     \
                                                   const T* rstd, T* dweight_parts,            \
                                                   T* dbias_parts, i64 R, int C) {             \
        norm_param_grad_chunk<T>(dy, x, mean, rstd, dweight_parts, dbias_parts, R, C);         \
    }

NORM_ENTRIES(float, f32)
NORM_ENTRIES(double, f64)
