// Device-side warp and block reductions shared by the softmax and loss kernels.
#pragma once
#include <cuda_runtime.h>

namespace deepkern::cuda {

// max(x, 0) that keeps NaN (NumPy's maximum and PyTorch's relu propagate it; fmaxf drops it)
__device__ __forceinline__ float relu_nan(float x) { return x < 0.f ? 0.f : x; }

// Online softmax state: running max m and sum s of exp(x - m). It starts empty (m = -inf, s = 0).
// -inf inputs add nothing (exp(-inf) = 0 exactly, never exp(-inf - -inf) = NaN); a NaN input makes
// s NaN for good, so the whole row comes out NaN as in the NumPy reference.
//
// Merges two partial states. An empty state (m == -inf, s == 0) leaves the other unchanged; one
// with m == -inf and a NaN sum (it saw only NaN and -inf) is not empty and carries its NaN over.
__device__ __forceinline__ void softmax_merge(float& m, float& s, float m2, float s2) {
    if (m2 == -INFINITY && s2 == 0.f) return;
    if (m == -INFINITY && s == 0.f) {
        m = m2;
        s = s2;
        return;
    }
    const float nm = fmaxf(m, m2);
    s = s * __expf(m - nm) + s2 * __expf(m2 - nm);
    m = nm;
}

// Adds x to an online state: one exp per element, rescaling the sum when the max grows.
__device__ __forceinline__ void softmax_push(float& m, float& s, float x) {
    if (x > m) {
        s = s * __expf(m - x) + 1.f;
        m = x;
    } else if (x != -INFINITY) {  // NaN lands here too: exp(NaN - m) poisons s
        s += __expf(x - m);
    }
}

__device__ __forceinline__ void warp_softmax_merge(float& m, float& s) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
        softmax_merge(m, s, m2, s2);
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Whole-block versions (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// Each call site uses its own shared scratch so that two calls in one kernel never race.
__device__ __forceinline__ void block_softmax_merge(float& m, float& s, float* sh_m, float* sh_s) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    warp_softmax_merge(m, s);
    if (lane == 0) {
        sh_m[warp] = m;
        sh_s[warp] = s;
    }
    __syncthreads();
    m = lane < warps ? sh_m[lane] : -INFINITY;
    s = lane < warps ? sh_s[lane] : 0.f;
    warp_softmax_merge(m, s);  // every warp reduces the same 32 partials: no second barrier needed
}

__device__ __forceinline__ float block_sum(float v, float* sh) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < warps ? sh[lane] : 0.f;
    return warp_sum(v);
}

}  // namespace deepkern::cuda
