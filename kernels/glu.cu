// Gated linear units on x [R, 2F] = [gate | up]: out = act(gate) * up, and the backward
//   dgate = dout * up * act'(gate),   dup = dout * act(gate)
// act: 0 = SiLU (SwiGLU), 1 = GELU tanh approximation, 2 = exact GELU (GeGLU).
//   silu(g)  = g s(g), s = 1/(1 + e^-g);         silu'(g) = s (1 + g (1 - s))
//   gelu_t(g) = g (1 + tanh u)/2, u = k0 (g + k1 g^3)
//   gelu_t'(g) = (1 + tanh u)/2 + g (1 - tanh^2 u) k0 (1 + 3 k1 g^2) / 2
//   gelu(g)  = g Phi(g);                          gelu'(g) = Phi(g) + g phi(g)
// One thread per (row, f).
#include "cuda_common.cuh"

template <typename T>
__device__ __forceinline__ void glu_act(T g, int act, T* value, T* slope) {
    const T k0 = T(0.7978845608028654);  // sqrt(2 / pi)
    const T k1 = T(0.044715);
    if (act == 0) {
        const T s = T(1) / (T(1) + d_exp(-g));
        *value = g * s;
        *slope = s * (T(1) + g * (T(1) - s));
    } else if (act == 1) {
        const T t = d_tanh(k0 * (g + k1 * g * g * g));
        *value = T(0.5) * g * (T(1) + t);
        *slope = T(0.5) * (T(1) + t) + T(0.5) * g * (T(1) - t * t) * k0 * (T(1) + T(3) * k1 * g * g);
    } else {
        const T cdf = T(0.5) * (T(1) + d_erf(g * T(0.7071067811865476)));
        *value = g * cdf;
        *slope = cdf + g * d_exp(T(-0.5) * g * g) * T(0.3989422804014327);  // 1/sqrt(2 pi)
    }
}

template <typename T>
__device__ void glu_forward_elem(const T* __restrict__ x, T* __restrict__ out, i64 R, int F, int act) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= R * F) return;
    const i64 r = idx / F;
    const int f = (int)(idx - r * F);
    const T g = x[r * 2 * F + f], u = x[r * 2 * F + F + f];
    T value, slope;
    glu_act(g, act, &value, &slope);
    out[idx] = value * u;
}

template <typename T>
__device__ void glu_backward_elem(const T* __restrict__ dout, const T* __restrict__ x, T* __restrict__ dx,
                                  i64 R, int F, int act) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= R * F) return;
    const i64 r = idx / F;
    const int f = (int)(idx - r * F);
    const T g = x[r * 2 * F + f], u = x[r * 2 * F + F + f], d = dout[idx];
    T value, slope;
    glu_act(g, act, &value, &slope);
    dx[r * 2 * F + f] = d * u * slope;
    dx[r * 2 * F + F + f] = d * value;
}

// grid = (ceil(R F / 256),), block = (256,)
#define GLU_ENTRIES(T, S)                                                                      \
    extern "C" __global__ void glu_forward_##S(const T* x, T* out, i64 R, int F, int act) {    \
        glu_forward_elem<T>(x, out, R, F, act);                                                \
    }                                                                                          \
    extern "C" __global__ void glu_backward_##S(const T* dout, const T* x, T* dx, i64 R,       \
                                                int F, int act) {                              \
        glu_backward_elem<T>(dout, x, dx, R, F, act);                                          \
    }

GLU_ENTRIES(float, f32)
GLU_ENTRIES(double, f64)

// The plain activations on x [n]: out = act(x), and dx = dy * act'(x). One thread per element.
template <typename T>
__device__ void act_elem(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out,
                         i64 n, int act, bool backward) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    T value, slope;
    glu_act(x[idx], act, &value, &slope);
    out[idx] = backward ? dy[idx] * slope : value;
}

// grid = (ceil(n / 256),), block = (256,)
#define ACT_ENTRIES(T, S)                                                                      \
    extern "C" __global__ void act_forward_##S(const T* x, T* out, i64 n, int act) {           \
        act_elem<T>(x, x, out, n, act, false);                                                 \
    }                                                                                          \
    extern "C" __global__ void act_backward_##S(const T* dy, const T* x, T* dx, i64 n,         \
                                                int act) {                                     \
        act_elem<T>(dy, x, dx, n, act, true);                                                  \
    }

ACT_ENTRIES(float, f32)
ACT_ENTRIES(double, f64)
