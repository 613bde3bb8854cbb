// Softmax, log-softmax and cross-entropy fused with log-softmax, along the last axis.
// One block of ROW_THREADS threads per row [C]; block-wide max and sum in shared memory.
//
//   m = max_c x_c,  s = sum_c exp(x_c - m),  lse = m + log s
//   softmax:      y_c = exp(x_c - m) / s        dx_c = y_c (dy_c - sum_k dy_k y_k)
//                 (attention: x scaled first, scale folded into dx; optional causal rows)
//   log_softmax:  y_c = x_c - lse               dx_c = dy_c - exp(y_c) sum_k dy_k
//   cross-entropy with target t, smoothing e, q_c = e/C + (1 - e) [c == t]:
//                 loss = lse - sum_c q_c x_c    dx_c = (exp(x_c - lse) - q_c) dloss
//                 (rows whose target is ignore_index: loss 0, dx 0; a target outside
//                 [0, C) that is not ignore_index, unchecked on the device: NaN, NaN)
#include "cuda_common.cuh"

// softmax of scale * x; tq > 0: causal rows (row r is query r % tq, sees columns c <= r % tq;
// the others get 0, or -inf for log_softmax)
template <typename T>
__device__ void softmax_forward_row(const T* __restrict__ x, T* __restrict__ y, int C,
                                    int log_out, T scale, int tq) {
    __shared__ T shm[ROW_THREADS];
    const i64 row = blockIdx.x;
    const T* xr = x + row * C;  // [C]
    T* yr = y + row * C;        // [C]
    const int n = tq ? min(int(row % tq) + 1, C) : C;  // columns taking part
    T m = neg_inf<T>();
    for (int c = threadIdx.x; c < n; c += blockDim.x) m = d_max(m, xr[c] * scale);
    m = block_reduce(m, shm, MaxOp());
    T s = T(0);
    for (int c = threadIdx.x; c < n; c += blockDim.x) s += d_exp(xr[c] * scale - m);
    s = block_reduce(s, shm, SumOp());
    if (log_out) {
        const T log_s = d_log(s);
        for (int c = threadIdx.x; c < n; c += blockDim.x) yr[c] = (xr[c] * scale - m) - log_s;
    } else {
        const T inv = T(1) / s;
        for (int c = threadIdx.x; c < n; c += blockDim.x) yr[c] = d_exp(xr[c] * scale - m) * inv;
    }
    const T masked = log_out ? neg_inf<T>() : T(0);
    for (int c = n + threadIdx.x; c < C; c += blockDim.x) yr[c] = masked;
}

template <typename T>
__device__ void softmax_backward_row(const T* __restrict__ dy, const T* __restrict__ y,
                                     T* __restrict__ dx, int C, int log_out, T scale) {
    __shared__ T shm[ROW_THREADS];
    const i64 row = blockIdx.x;
    const T* dyr = dy + row * C;
    const T* yr = y + row * C;
    T* dxr = dx + row * C;
    T s = T(0);
    if (log_out) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) s += dyr[c];
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) s += dyr[c] * yr[c];
    }
    s = block_reduce(s, shm, SumOp());
    if (log_out) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) dxr[c] = dyr[c] - d_exp(yr[c]) * s;
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) dxr[c] = yr[c] * (dyr[c] - s) * scale;
    }
}

template <typename T>
__device__ void cross_entropy_forward_row(const T* __restrict__ logits, const i64* __restrict__ target,
                                          T* __restrict__ loss, T* __restrict__ lse, int C,
                                          i64 ignore_index, T smoothing) {
    __shared__ T shm[ROW_THREADS];
    const i64 row = blockIdx.x;
    const T* xr = logits + row * C;  // [V]
    T m = neg_inf<T>();
    for (int c = threadIdx.x; c < C; c += blockDim.x) m = d_max(m, xr[c]);
    m = block_reduce(m, shm, MaxOp());
    T s = T(0), sx = T(0);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        s += d_exp(xr[c] - m);
        sx += xr[c];
    }
    s = block_reduce(s, shm, SumOp());
    if (smoothing != T(0)) sx = block_reduce(sx, shm, SumOp());
    if (threadIdx.x == 0) {
        const T l = m + d_log(s);
        const i64 t = target[row];
        lse[row] = l;
        if (t == ignore_index) {
            loss[row] = T(0);
        } else if (t < 0 || t >= C) {  // unchecked on the device (no sync): NaN, no OOB read
            loss[row] = d_nan(T(0));
        } else {
            T r = l - (T(1) - smoothing) * xr[t];
            if (smoothing != T(0)) r -= smoothing / T(C) * sx;
            loss[row] = r;
        }
    }
}

template <typename T>
__device__ void cross_entropy_backward_row(const T* __restrict__ dloss, const T* __restrict__ logits,
                                           const i64* __restrict__ target, const T* __restrict__ lse,
                                           T* __restrict__ dlogits, int C, i64 ignore_index,
                                           T smoothing) {
    const i64 row = blockIdx.x;
    const T* xr = logits + row * C;
    T* dxr = dlogits + row * C;
    const i64 t = target[row];
    if (t == ignore_index) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) dxr[c] = T(0);
        return;
    }
    if (t < 0 || t >= C) {  // an out-of-range class index: NaN gradients for the row
        for (int c = threadIdx.x; c < C; c += blockDim.x) dxr[c] = d_nan(T(0));
        return;
    }
    const T l = lse[row], g = dloss[row], base = smoothing / T(C);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const T q = (c == t) ? base + (T(1) - smoothing) : base;
        dxr[c] = (d_exp(xr[c] - l) - q) * g;
    }
}

// ---------------------------------------------------------------- entry points
// grid = (R,), block = (ROW_THREADS,)
#define SOFTMAX_ENTRIES(T, S)                                                                  \
    extern "C" __global__ void softmax_forward_##S(const T* x, T* y, int C, int log_out,       \
                                                   T scale, int tq) {                          \
        softmax_forward_row<T>(x, y, C, log_out, scale, tq);                                   \
    }                                                                                          \
    extern "C" __global__ void softmax_backward_##S(const T* dy, const T* y, T* dx, int C,     \
                                                    int log_out, T scale) {                    \
        softmax_backward_row<T>(dy, y, dx, C, log_out, scale);                                 \
    }                                                                                          \
    extern "C" __global__ void cross_entropy_forward_##S(const T* logits, const i64* target,   \
                                                         T* loss, T* lse, int C,               \
                                                         i64 ignore_index, T smoothing) {      \
        cross_entropy_forward_row<T>(logits, target, loss, lse, C, ignore_index, smoothing);   \
    }                                                                                          \
    extern "C" __global__ void cross_entropy_backward_##S(                                     \
        const T* dloss, const T* logits, const i64* target, const T* lse, T* dlogits, int C,   \
        i64 ignore_index, T smoothing) {                                                       \
        cross_entropy_backward_row<T>(dloss, logits, target, lse, dlogits, C, ignore_index,    \
                                      smoothing);                                              \
    }

SOFTMAX_ENTRIES(float, f32)
SOFTMAX_ENTRIES(double, f64)
