// RWKV-4's WKV recurrence, forward and backward (math in wkv.py and functional/rwkv.py).
//
// Layout: w = -exp(time_decay), u = time_first [C]; k, v, out, gy, dk, dv [B, T, C]. One
// thread per (b, c) (task = b C + c, so neighbouring threads read neighbouring channels of
// one step: coalesced), sequential over t, the state in registers. The max trick: a_t and
// b_t are held as e^{pp} aa and e^{pp} bb, so no exp sees a positive argument:
//
//   wkv_t = (e^{pp-p} aa + e^{u+k_t-p} v_t) / (e^{pp-p} bb + e^{u+k_t-p}),  p = max(pp, u+k_t)
//   aa, bb, pp <- e^{w+pp-p'} aa + e^{k_t-p'} v_t, e^{w+pp-p'} bb + e^{k_t-p'},
//                 p' = max(w+pp, k_t)
//
// pp starts at -inf: max(-inf, x) = x and exp(-inf) = 0, so step 0 needs no special case.
// wkv_backward reruns that scan (writing log D_t and wkv_t to the thread's own column of
// scratch [2, B, T, C], and carrying a'_t, b'_t = d a_t / dw, d b_t / dw for dw), then runs
// the reverse scan of alpha_t, beta_t (held as e^{qq} al, e^{qq} be, their own running
// max). dw and du of each (b, c) go to gw_parts, gu_parts [B, C]; the caller sums them over
// b in a fixed order: no atomics, the same result on every run.
#include "cuda_common.cuh"

template <typename T>
__device__ void wkv_forward_thread(const T* __restrict__ w, const T* __restrict__ u,
                                   const T* __restrict__ k, const T* __restrict__ v, int B,
                                   int Tn, int C, T* __restrict__ out) {
    const i64 task = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (task >= (i64)B * C) return;
    const i64 b = task / C;
    const int c = (int)(task % C);
    const i64 base = b * Tn * C + c;  // element (b, 0, c); step t at base + t C
    const T wd = w[c], uu = u[c];
    T aa = T(0), bb = T(0), pp = neg_inf<T>();
    for (int t = 0; t < Tn; ++t) {
        const i64 i = base + (i64)t * C;
        const T kk = k[i], vv = v[i];
        T ww = uu + kk;  // the current token, with its bonus u
        T p = d_max(pp, ww);
        T e1 = d_exp(pp - p), e2 = d_exp(ww - p);
        out[i] = (e1 * aa + e2 * vv) / (e1 * bb + e2);
        ww = wd + pp;  // decay the state, then add token t
        p = d_max(ww, kk);
        e1 = d_exp(ww - p);
        e2 = d_exp(kk - p);
        aa = e1 * aa + e2 * vv;
        bb = e1 * bb + e2;
        pp = p;
    }
}

template <typename T>
__device__ void wkv_backward_thread(const T* __restrict__ w, const T* __restrict__ u,
                                    const T* __restrict__ k, const T* __restrict__ v,
                                    const T* __restrict__ gy, int B, int Tn, int C,
                                    T* __restrict__ dk, T* __restrict__ dv,
                                    T* __restrict__ gw_parts, T* __restrict__ gu_parts,
                                    T* __restrict__ scratch) {
    const i64 task = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (task >= (i64)B * C) return;
    const i64 b = task / C;
    const int c = (int)(task % C);
    const i64 base = b * Tn * C + c;
    T* logD = scratch;                 // [B, T, C]: log D_t
    T* Y = scratch + (i64)B * Tn * C;  // [B, T, C]: wkv_t
    const T wd = w[c], uu = u[c];
    // the forward scan, with a', b' (scaled like aa, bb by e^pp)
    T aa = T(0), bb = T(0), aa2 = T(0), bb2 = T(0), pp = neg_inf<T>();
    T gw = T(0), gu = T(0);
    for (int t = 0; t < Tn; ++t) {
        const i64 i = base + (i64)t * C;
        const T kk = k[i], vv = v[i], g = gy[i];
        T ww = uu + kk;
        T p = d_max(pp, ww);
        T e1 = d_exp(pp - p), e2 = d_exp(ww - p);
        const T den = e1 * bb + e2;  // D_t e^{-p}
        const T y = (e1 * aa + e2 * vv) / den;
        logD[i] = p + d_log(den);
        Y[i] = y;
        gw += g * e1 * (aa2 - y * bb2) / den;
        const T direct = g * e2 / den;  // g_t e^{u+k_t} / D_t
        dv[i] = direct;
        dk[i] = direct * (vv - y);
        gu += direct * (vv - y);
        ww = wd + pp;
        p = d_max(ww, kk);
        e1 = d_exp(ww - p);
        e2 = d_exp(kk - p);
        aa2 = e1 * (aa2 + aa);  // a'_{t+1} = e^w (a'_t + a_t)
        bb2 = e1 * (bb2 + bb);
        aa = e1 * aa + e2 * vv;
        bb = e1 * bb + e2;
        pp = p;
    }
    gw_parts[task] = gw;
    gu_parts[task] = gu;
    // the reverse scan: alpha_{t-1} = e^w alpha_t + g_t / D_t (beta with g_t wkv_t)
    T al = T(0), be = T(0), qq = neg_inf<T>();
    for (int t = Tn - 1; t >= 0; --t) {
        const i64 i = base + (i64)t * C;
        const T e = d_exp(k[i] + qq);  // <= 1 (functional/rwkv.py's docstring)
        dv[i] += e * al;
        dk[i] += e * (v[i] * al - be);
        const T ww = wd + qq, nl = -logD[i];
        const T q = d_max(ww, nl);
        const T e1 = d_exp(ww - q), e2 = d_exp(nl - q);
        const T g = gy[i];
        al = e1 * al + e2 * g;
        be = e1 * be + e2 * g * Y[i];
        qq = q;
    }
}

// ---------------------------------------------------------------- entry points
#define WKV_ENTRIES(T, S_)                                                                      \
    extern "C" __global__ void wkv_forward_##S_(const T* w, const T* u, const T* k, const T* v, \
                                                int B, int Tn, int C, T* out) {                 \
        wkv_forward_thread<T>(w, u, k, v, B, Tn, C, out);                                       \
    }                                                                                           \
    extern "C" __global__ void wkv_backward_##S_(const T* w, const T* u, const T* k,            \
                                                 const T* v, const T* gy, int B, int Tn, int C, \
                                                 T* dk, T* dv, T* gw_parts, T* gu_parts,        \
                                                 T* scratch) {                                  \
        wkv_backward_thread<T>(w, u, k, v, gy, B, Tn, C, dk, dv, gw_parts, gu_parts, scratch);  \
    }

WKV_ENTRIES(float, f32)
WKV_ENTRIES(double, f64)
