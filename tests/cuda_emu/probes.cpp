// Deliberately wrong kernels, to show that the emulator reports what a GPU would not (or reports
// as a launch error). Each emu_probe(n) runs one; tests/test_cuda_emu.py expects the abort/error.
#include <string>

#include "cuda_runtime.h"

namespace {

// threads of one block wait at two different barriers: undefined on a GPU (often a hang)
__global__ void divergent_barrier_kernel(float* out) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.f;
}

// lane 0 returns, then the warp shuffles with a full mask: undefined on a GPU
__global__ void shuffle_after_exit_kernel(float* out) {
    if (threadIdx.x == 0) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
}

// a float4 load from an address that is not 16-byte aligned: a misaligned-address fault
__global__ void misaligned_ldg_kernel(const float* in, float* out) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(in + 1));
    out[threadIdx.x] = v.x;
}

// a correct one: dynamic shared memory (extern __shared__, as build.py rewrites it) and __shfl_down_sync
__global__ void shared_sum_kernel(const float* in, float* out) {
    float* partial = ::cuda_emu::dynamic_shared<float>();
    float v = in[threadIdx.x];
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (unsigned w = 0; w < blockDim.x / 32; ++w) total += partial[w];
        *out = total;
    }
}

}  // namespace

// 0-2: abort with the emulator's message; 3: returns the launch error; 4: returns sum(1..64) = 2080
extern "C" int emu_probe(int which) {
    static float buf[1024 + 8];
    switch (which) {
        case 0: ::cuda_emu::launch(1, 32).with(divergent_barrier_kernel)(buf); break;
        case 1: ::cuda_emu::launch(1, 32).with(shuffle_after_exit_kernel)(buf); break;
        case 2: ::cuda_emu::launch(1, 32).with(misaligned_ldg_kernel)(buf, buf); break;
        case 3: ::cuda_emu::launch(1, 2048).with(divergent_barrier_kernel)(buf); break;  // > 1024 threads
        default: {
            for (int i = 0; i < 64; ++i) buf[i] = static_cast<float>(i + 1);
            ::cuda_emu::launch(1, 64, 2 * sizeof(float)).with(shared_sum_kernel)(buf, buf + 64);
            return static_cast<int>(buf[64]);
        }
    }
    return static_cast<int>(cudaGetLastError());
}
