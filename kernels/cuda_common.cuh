// Helpers shared by every CUDA source of tinyllm.kernels (included, never compiled alone).
//
// No system headers: NVRTC (CuPy's compiler) has none. Math goes through the overloads
// below so that one template body serves float and double. Block reductions use shared
// memory and __syncthreads only (blockDim.x a power of two, at most 1024).
#pragma once

// threads per block of the one-block-per-row kernels (norms, softmax, cross-entropy)
#define ROW_THREADS 256

typedef long long i64;

__device__ __forceinline__ float d_exp(float x) { return expf(x); }
__device__ __forceinline__ double d_exp(double x) { return exp(x); }
__device__ __forceinline__ float d_log(float x) { return logf(x); }
__device__ __forceinline__ double d_log(double x) { return log(x); }
__device__ __forceinline__ float d_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double d_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float d_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double d_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float d_erf(float x) { return erff(x); }
__device__ __forceinline__ double d_erf(double x) { return erf(x); }
__device__ __forceinline__ float d_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double d_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float d_nan(float) { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double d_nan(double) { return __longlong_as_double(0x7ff8000000000000LL); }

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() {
    return -__int_as_float(0x7f800000);
}
template <> __device__ __forceinline__ double neg_inf<double>() {
    return -__longlong_as_double(0x7ff0000000000000LL);
}

struct SumOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
        return d_max(a, b);
    }
};

// Reduce v over the block with op; every thread gets the result. shm holds blockDim.x
// values of T. Ends with a barrier, so shm may be reused at once.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* shm, Op op) {
    const int tid = threadIdx.x;
    shm[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) shm[tid] = op(shm[tid], shm[tid + s]);
        __syncthreads();
    }
    T r = shm[0];
    __syncthreads();
    return r;
}
