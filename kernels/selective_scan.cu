// The selective scan of Mamba (S6), forward and backward (math in selective_scan.py).
//
// Forward, one thread per (b, d), sequential over t, the running state h [N] kept in
// last_state (the thread's own row, left holding h_{L-1}):
//   h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t,   out_t = (<C_t, h_t> + D u_t) silu(z_t)
// and the state entering each chunk of `chunk` steps written to states [batch, dim, n_chunks, N].
// Backward, one thread per (b, g, slice): for each channel d of its slice of group g,
// chunk by chunk from the last, it recomputes h and a = exp(Delta A) over the chunk into
// its workspace rows (hs [chunk+1, N], decay [chunk, N]), then runs the reverse scan
//   g_t = C_t dy_t + a_{t+1} g_{t+1}   (carry [N] holds a_{t+1} g_{t+1})
// writing du, dDelta, dz per step, dA and dD per (b, d), and dB, dC into its own row of
// the [batch, G, S, L, N] scratch (the slices are summed by the caller: no atomics, the
// same result on every run). B and C arrive as [batch, G, L, N].
#include "cuda_common.cuh"

template <typename T>
__device__ __forceinline__ T d_sigmoid(T x) {
    return T(1) / (T(1) + d_exp(-x));
}

template <typename T>
__device__ void scan_forward_thread(const T* __restrict__ u, const T* __restrict__ dt,
                                    const T* __restrict__ A, const T* __restrict__ Bt,
                                    const T* __restrict__ Ct, const T* __restrict__ D,
                                    const T* __restrict__ z, int batch, int dim, int L, int N,
                                    int G, int has_z, int chunk, T* __restrict__ out,
                                    T* __restrict__ last_state, T* __restrict__ states) {
    const i64 task = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (task >= (i64)batch * dim) return;
    const i64 b = task / dim;
    const int d = (int)(task % dim);
    const int g = d / (dim / G);
    const int n_chunks = (L + chunk - 1) / chunk;
    const T* Ad = A + (i64)d * N;
    const T* ub = u + task * L;  // [L] rows of u, Delta, z, out for (b, d)
    const T* dtb = dt + task * L;
    T* h = last_state + task * N;  // [N]
    for (int n = 0; n < N; ++n) h[n] = T(0);
    for (int t = 0; t < L; ++t) {
        if (t % chunk == 0) {
            T* st = states + (task * n_chunks + t / chunk) * N;
            for (int n = 0; n < N; ++n) st[n] = h[n];
        }
        const T delta = dtb[t];
        const T x = delta * ub[t];
        const T* Bb = Bt + ((b * G + g) * (i64)L + t) * N;
        const T* Cc = Ct + ((b * G + g) * (i64)L + t) * N;
        T y = T(0);
        for (int n = 0; n < N; ++n) {
            h[n] = d_exp(delta * Ad[n]) * h[n] + x * Bb[n];
            y += Cc[n] * h[n];
        }
        T o = y + D[d] * ub[t];
        if (has_z) {
            const T zz = z[task * L + t];
            o = o * zz * d_sigmoid(zz);
        }
        out[task * L + t] = o;
    }
}

template <typename T>
__device__ void scan_backward_thread(
    const T* __restrict__ dout, const T* __restrict__ dlast, const T* __restrict__ u,
    const T* __restrict__ dt, const T* __restrict__ A, const T* __restrict__ Bt,
    const T* __restrict__ Ct, const T* __restrict__ D, const T* __restrict__ z, int batch,
    int dim, int L, int N, int G, int S, int has_z, int chunk, const T* __restrict__ states,
    T* __restrict__ hs_all, T* __restrict__ decay_all, T* __restrict__ carry_all,
    T* __restrict__ du, T* __restrict__ ddt, T* __restrict__ dz, T* __restrict__ dA_parts,
    T* __restrict__ dD_parts, T* __restrict__ dB_parts, T* __restrict__ dC_parts) {
    const i64 task = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (task >= (i64)batch * G * S) return;
    const i64 b = task / (G * S);
    const int g = (int)((task / S) % G);
    const int s = (int)(task % S);
    const int H = dim / G;
    const int n_chunks = (L + chunk - 1) / chunk;
    T* hs = hs_all + task * (i64)(chunk + 1) * N;  // hs[i] = h_{t0 + i - 1}
    T* decay = decay_all + task * (i64)chunk * N;   // decay[i] = a_{t0 + i}
    T* carry = carry_all + task * (i64)N;           // a_{t+1} g_{t+1}
    T* dBs = dB_parts + task * (i64)L * N;          // [L, N]: task = (b, g, s) row-major
    T* dCs = dC_parts + task * (i64)L * N;
    for (i64 i = 0; i < (i64)L * N; ++i) {
        dBs[i] = T(0);
        dCs[i] = T(0);
    }
    const T* Bg = Bt + (b * G + g) * (i64)L * N;  // [L, N]
    const T* Cg = Ct + (b * G + g) * (i64)L * N;
    for (int d = g * H + s * H / S; d < g * H + (s + 1) * H / S; ++d) {
        const i64 row = b * dim + d;  // (b, d)
        const T* Ad = A + (i64)d * N;
        T* dAd = dA_parts + row * N;
        for (int n = 0; n < N; ++n) {
            carry[n] = dlast[row * N + n];
            dAd[n] = T(0);
        }
        T dD_acc = T(0);
        for (int k = n_chunks - 1; k >= 0; --k) {
            const int t0 = k * chunk;
            const int t1 = min(L, t0 + chunk);
            for (int n = 0; n < N; ++n) hs[n] = states[(row * n_chunks + k) * N + n];
            for (int t = t0; t < t1; ++t) {  // recompute h and a over the chunk
                const int i = t - t0;
                const T delta = dt[row * L + t];
                const T x = delta * u[row * L + t];
                for (int n = 0; n < N; ++n) {
                    const T a = d_exp(delta * Ad[n]);
                    decay[i * N + n] = a;
                    hs[(i + 1) * N + n] = a * hs[i * N + n] + x * Bg[(i64)t * N + n];
                }
            }
            for (int t = t1 - 1; t >= t0; --t) {  // the reverse scan
                const int i = t - t0;
                const T delta = dt[row * L + t];
                const T ut = u[row * L + t];
                const T* Bb = Bg + (i64)t * N;
                const T* Cc = Cg + (i64)t * N;
                T dy = dout[row * L + t];
                if (has_z) {  // out = (y + D u) silu(z)
                    const T zz = z[row * L + t];
                    const T sg = d_sigmoid(zz);
                    T y = T(0);
                    for (int n = 0; n < N; ++n) y += Cc[n] * hs[(i + 1) * N + n];
                    dz[row * L + t] = dy * (y + D[d] * ut) * sg * (T(1) + zz * (T(1) - sg));
                    dy = dy * zz * sg;
                }
                dD_acc += dy * ut;
                T d_delta = T(0), d_u = T(0);
                for (int n = 0; n < N; ++n) {
                    const T a = decay[i * N + n];
                    const T h_prev = hs[i * N + n];
                    const T gn = carry[n] + Cc[n] * dy;  // g_t
                    dCs[(i64)t * N + n] += dy * hs[(i + 1) * N + n];
                    dBs[(i64)t * N + n] += gn * delta * ut;
                    dAd[n] += gn * delta * a * h_prev;
                    d_delta += gn * (Bb[n] * ut + Ad[n] * a * h_prev);
                    d_u += gn * Bb[n];
                    carry[n] = a * gn;
                }
                ddt[row * L + t] = d_delta;
                du[row * L + t] = d_u * delta + D[d] * dy;
            }
        }
        dD_parts[row] = dD_acc;
    }
}

// ---------------------------------------------------------------- entry points
#define SCAN_ENTRIES(T, S_)                                                                     \
    extern "C" __global__ void scan_forward_##S_(                                               \
        const T* u, const T* dt, const T* A, const T* Bt, const T* Ct, const T* D, const T* z,  \
        int batch, int dim, int L, int N, int G, int has_z, int chunk, T* out, T* last_state,   \
        T* states) {                                                                            \
        scan_forward_thread<T>(u, dt, A, Bt, Ct, D, z, batch, dim, L, N, G, has_z, chunk, out,  \
                               last_state, states);                                             \
    }                                                                                           \
    extern "C" __global__ void scan_backward_##S_(                                              \
        const T* dout, const T* dlast, const T* u, const T* dt, const T* A, const T* Bt,        \
        const T* Ct, const T* D, const T* z, int batch, int dim, int L, int N, int G, int S,    \
        int has_z, int chunk, const T* states, T* hs, T* decay, T* carry, T* du, T* ddt,        \
        T* dz, T* dA_parts, T* dD_parts, T* dB_parts, T* dC_parts) {                            \
        scan_backward_thread<T>(dout, dlast, u, dt, A, Bt, Ct, D, z, batch, dim, L, N, G, S,    \
                                has_z, chunk, states, hs, decay, carry, du, ddt, dz, dA_parts,  \
                                dD_parts, dB_parts, dC_parts);                                  \
    }

SCAN_ENTRIES(float, f32)
SCAN_ENTRIES(double, f64)
