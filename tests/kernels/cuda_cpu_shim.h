// Runs tinyllm's CUDA kernel sources on the CPU, for tests on machines without a GPU.
//
// Each block runs as blockDim.x * blockDim.y std::threads (blocks one after another), so
// __syncthreads() is a real barrier and __shared__ arrays (function statics here) are shared
// by the threads of a block. A thread that returns leaves the barrier (arrive_and_drop), as
// exited threads do on a GPU. Dynamic shared memory comes from emu_dynamic_shared().
// Included before the .cu sources; compiled with g++ -std=c++20.
#pragma once

#include <math.h>

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

using std::max;
using std::min;

struct emu_uint3 {
    unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

inline thread_local emu_uint3 threadIdx;
inline emu_uint3 blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* emu_barrier = nullptr;
inline std::vector<unsigned char> emu_shared_storage;

inline unsigned char* emu_dynamic_shared() { return emu_shared_storage.data(); }
inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, sizeof d);
    return d;
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

template <class Kernel>
void emu_launch(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel) {
    gridDim = grid;
    blockDim = block;
    emu_shared_storage.assign(shared_bytes + 64, 0xAB);  // garbage, as on a GPU
    const unsigned n = block.x * block.y * block.z;
    for (unsigned gz = 0; gz < grid.z; ++gz)
        for (unsigned gy = 0; gy < grid.y; ++gy)
            for (unsigned gx = 0; gx < grid.x; ++gx) {
                blockIdx = {gx, gy, gz};
                std::barrier<> bar(n);
                emu_barrier = &bar;
                std::vector<std::thread> threads;
                threads.reserve(n);
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx)
                            threads.emplace_back([&, tx, ty, tz] {
                                threadIdx = {tx, ty, tz};
                                kernel();
                                bar.arrive_and_drop();
                            });
                for (auto& t : threads) t.join();
            }
}
