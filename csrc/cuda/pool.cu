// Pooling: one thread per output for the forward passes and the max backward (which scatters
// to its window's first maximum); one thread per input for the avg backward (a gather, no atomics).
#include "cuda/common.cuh"
#include "cuda/pool.cuh"

namespace deepkern::cuda {
namespace {

constexpr int kThreads = 256;

#define GRID_STRIDE(i, n)                                                                       \
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Offset in x's plane of the first maximum of output (oh, ow)'s window. Padding is never chosen:
// with padding <= kernel/2 every window holds at least one real element. A NaN is the maximum
// (the first NaN wins, as NumPy's max and argmax have it). Offsets are 64-bit: one H x W plane
// may hold more than 2^31 elements.
__device__ __forceinline__ int64_t window_argmax(const Pool2dShape& s, const float* __restrict__ plane, int oh,
                                                 int ow) {
    const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
    int64_t best_at = -1;
    float best = -INFINITY;
    for (int i = 0; i < s.KH; ++i) {
        const int h = h0 + i;
        if (h < 0 || h >= s.H) continue;
        for (int j = 0; j < s.KW; ++j) {
            const int w = w0 + j;
            if (w < 0 || w >= s.W) continue;
            const int64_t at = static_cast<int64_t>(h) * s.W + w;
            const float v = __ldg(plane + at);
            // strict: ties keep the first (row-major) maximum; once best is NaN nothing replaces it
            if (best_at < 0 || v > best || (v != v && best == best)) {
                best = v;
                best_at = at;
            }
        }
    }
    return best_at;
}

// x is (N, C, H, W), y is (N, C, OH, OW)
__global__ void max_pool_forward_kernel(Pool2dShape s, const float* __restrict__ x, float* __restrict__ y) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.OH * s.OW;
    GRID_STRIDE(idx, total) {
        const int ow = idx % s.OW, oh = (idx / s.OW) % s.OH;
        const int64_t plane = idx / (static_cast<int64_t>(s.OH) * s.OW);
        const float* xp = x + plane * s.H * s.W;  // plane is int64_t: no 32-bit product
        y[idx] = xp[window_argmax(s, xp, oh, ow)];
    }
}

// gy is (N, C, OH, OW); gx (N, C, H, W) zeroed beforehand. Windows overlap when stride < kernel.
__global__ void max_pool_backward_kernel(Pool2dShape s, const float* __restrict__ gy, const float* __restrict__ x,
                                         float* __restrict__ gx) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.OH * s.OW;
    GRID_STRIDE(idx, total) {
        const int ow = idx % s.OW, oh = (idx / s.OW) % s.OH;
        const int64_t plane = (idx / (static_cast<int64_t>(s.OH) * s.OW)) * s.H * s.W;
        atomicAdd(gx + plane + window_argmax(s, x + plane, oh, ow), gy[idx]);
    }
}

// x is (N, C, H, W), y is (N, C, OH, OW)
__global__ void avg_pool_forward_kernel(Pool2dShape s, const float* __restrict__ x, float* __restrict__ y) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.OH * s.OW;
    const float inv = 1.f / static_cast<float>(s.KH * s.KW);
    GRID_STRIDE(idx, total) {
        const int ow = idx % s.OW, oh = (idx / s.OW) % s.OH;
        const float* xp = x + (idx / (static_cast<int64_t>(s.OH) * s.OW)) * s.H * s.W;
        const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
        float acc = 0.f;
        for (int i = max(h0, 0); i < min(h0 + s.KH, s.H); ++i)
            for (int j = max(w0, 0); j < min(w0 + s.KW, s.W); ++j)
                acc += __ldg(xp + static_cast<int64_t>(i) * s.W + j);
        y[idx] = acc * inv;
    }
}

// gy is (N, C, OH, OW), gx is (N, C, H, W): each input sums the outputs whose windows cover it.
__global__ void avg_pool_backward_kernel(Pool2dShape s, const float* __restrict__ gy, float* __restrict__ gx) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.H * s.W;
    const float inv = 1.f / static_cast<float>(s.KH * s.KW);
    GRID_STRIDE(idx, total) {
        const int w = idx % s.W, h = (idx / s.W) % s.H;
        const float* gp = gy + (idx / (static_cast<int64_t>(s.H) * s.W)) * s.OH * s.OW;
        // window oh covers h when oh*SH - PH <= h < oh*SH - PH + KH
        const int hp = h + s.PH, wp = w + s.PW;
        const int oh_lo = hp < s.KH ? 0 : (hp - s.KH) / s.SH + 1, oh_hi = min(hp / s.SH, s.OH - 1);
        const int ow_lo = wp < s.KW ? 0 : (wp - s.KW) / s.SW + 1, ow_hi = min(wp / s.SW, s.OW - 1);
        float acc = 0.f;
        for (int oh = oh_lo; oh <= oh_hi; ++oh)
            for (int ow = ow_lo; ow <= ow_hi; ++ow) acc += gp[static_cast<int64_t>(oh) * s.OW + ow];
        gx[idx] = acc * inv;
    }
}

#undef GRID_STRIDE

}  // namespace

void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y, cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.OH * s.OW;
    max_pool_forward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(s, x, y);
    CUDA_CHECK_LAUNCH("max_pool_forward_kernel");
}

void max_pool2d_backward(const Pool2dShape& s, const float* gy, const float* x, float* gx, cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.OH * s.OW;
    CUDA_CHECK(cudaMemsetAsync(gx, 0, sizeof(float) * static_cast<size_t>(s.N) * s.C * s.H * s.W, stream));
    max_pool_backward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(s, gy, x, gx);
    CUDA_CHECK_LAUNCH("max_pool_backward_kernel");
}

void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y, cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.OH * s.OW;
    avg_pool_forward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(s, x, y);
    CUDA_CHECK_LAUNCH("avg_pool_forward_kernel");
}

void avg_pool2d_backward(const Pool2dShape& s, const float* gy, float* gx, cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(s.N) * s.C * s.H * s.W;
    avg_pool_backward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(s, gy, gx);
    CUDA_CHECK_LAUNCH("avg_pool_backward_kernel");
}

}  // namespace deepkern::cuda
