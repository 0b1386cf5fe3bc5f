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

}  // namespace

extern "C" int emu_probe(int which) {
    static float buf[1024 + 8];
    switch (which) {
        case 0: ::cuda_emu::launch(1, 32).with(divergent_barrier_kernel)(buf); break;
        case 1: ::cuda_emu::launch(1, 32).with(shuffle_after_exit_kernel)(buf); break;
        case 2: ::cuda_emu::launch(1, 32).with(misaligned_ldg_kernel)(buf, buf); break;
        default: ::cuda_emu::launch(1, 2048).with(divergent_barrier_kernel)(buf); break;  // > 1024 threads
    }
    return static_cast<int>(cudaGetLastError());
}
