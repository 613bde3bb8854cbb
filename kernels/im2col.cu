// im2col and col2im (math in im2col.py), one thread per element written, no atomics.
//
// Planes b = (n, c) of x [B, H, W]; cols [B, kh, kw, Ho, Wo]:
//   im2col: cols[b, i, j, p, q] = x[b, p sh + i dh - top, q sw + j dw - left], or pad_value
//           outside the image (0 for convolution, -inf for max-pool). One thread per column
//           entry.
//   col2im: dx[b, h, w] = sum over (i, j) of cols[b, i, j, p, q] where
//           p sh = h + top - i dh and q sw = w + left - j dw have integer solutions
//           0 <= p < Ho, 0 <= q < Wo. One thread per pixel gathers its kh kw candidates, so
//           every pixel is written by one thread (deterministic, no atomicAdd).
#include "cuda_common.cuh"

template <typename T>
__device__ void im2col_entry(const T* __restrict__ x, T* __restrict__ cols, i64 B, int H, int W,
                             int kh, int kw, int Ho, int Wo, int sh, int sw, int dh, int dw,
                             int top, int left, T pad_value) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 total = B * kh * kw * Ho * Wo;
    if (idx >= total) return;
    i64 r = idx;
    const int q = (int)(r % Wo);
    r /= Wo;
    const int p = (int)(r % Ho);
    r /= Ho;
    const int j = (int)(r % kw);
    r /= kw;
    const int i = (int)(r % kh);
    const i64 b = r / kh;
    const int h = p * sh + i * dh - top;
    const int w = q * sw + j * dw - left;
    cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(b * H + h) * W + w] : pad_value;
}

template <typename T>
__device__ void col2im_pixel(const T* __restrict__ cols, T* __restrict__ dx, i64 B, int H, int W,
                             int kh, int kw, int Ho, int Wo, int sh, int sw, int dh, int dw,
                             int top, int left) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * H * W) return;
    const int w = (int)(idx % W);
    const int h = (int)((idx / W) % H);
    const i64 b = idx / ((i64)H * W);
    T acc = (T)0;
    for (int i = 0; i < kh; ++i) {
        const int ph = h + top - i * dh;  // = p sh
        if (ph < 0 || ph % sh) continue;
        const int p = ph / sh;
        if (p >= Ho) continue;
        for (int j = 0; j < kw; ++j) {
            const int qw = w + left - j * dw;  // = q sw
            if (qw < 0 || qw % sw) continue;
            const int q = qw / sw;
            if (q >= Wo) continue;
            acc += cols[(((b * kh + i) * kw + j) * Ho + p) * Wo + q];
        }
    }
    dx[idx] = acc;
}

// grid = (ceil(B kh kw Ho Wo / 256),) for im2col, (ceil(B H W / 256),) for col2im; block = (256,)
#define IM2COL_ENTRIES(T, S)                                                                   \
    extern "C" __global__ void im2col_##S(const T* x, T* cols, i64 B, int H, int W, int kh,    \
                                          int kw, int Ho, int Wo, int sh, int sw, int dh,      \
                                          int dw, int top, int left, T pad_value) {            \
        im2col_entry<T>(x, cols, B, H, W, kh, kw, Ho, Wo, sh, sw, dh, dw, top, left,           \
                        pad_value);                                                            \
    }                                                                                          \
    extern "C" __global__ void col2im_##S(const T* cols, T* dx, i64 B, int H, int W, int kh,   \
                                          int kw, int Ho, int Wo, int sh, int sw, int dh,      \
                                          int dw, int top, int left) {                         \
        col2im_pixel<T>(cols, dx, B, H, W, kh, kw, Ho, Wo, sh, sw, dh, dw, top, left);         \
    }

IM2COL_ENTRIES(float, f32)
IM2COL_ENTRIES(double, f64)
