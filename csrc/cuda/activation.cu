// relu and softmax / log_softmax kernels. Softmax reads each row once for an online
// max-and-sum (one exp per element), then once more to write; the second read mostly hits L2.
#include "cuda/activation.cuh"
#include "cuda/common.cuh"
#include "cuda/reduce.cuh"

namespace deepkern::cuda {
namespace {

constexpr int kThreads = 256;

// ------------------------------------------------------------------ relu
// relu(NaN) = NaN, as NumPy's maximum and PyTorch's relu give (fmaxf would return 0).
// x, y are (n,); quads while 16-byte aligned, the tail element by element.
__global__ void relu_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n, bool vec) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec) {
        const int64_t quads = n / 4;
        for (int64_t q = start; q < quads; q += stride) {
            float4 v = __ldg(reinterpret_cast<const float4*>(x) + q);
            v.x = relu_nan(v.x); v.y = relu_nan(v.y); v.z = relu_nan(v.z); v.w = relu_nan(v.w);
            reinterpret_cast<float4*>(y)[q] = v;
        }
        done = quads * 4;
    }
    for (int64_t i = done + start; i < n; i += stride) y[i] = relu_nan(x[i]);
}

// gy, x, gx are (n,)
__global__ void relu_backward_kernel(const float* __restrict__ gy, const float* __restrict__ x,
                                     float* __restrict__ gx, int64_t n, bool vec) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec) {
        const int64_t quads = n / 4;
        for (int64_t q = start; q < quads; q += stride) {
            const float4 g = __ldg(reinterpret_cast<const float4*>(gy) + q);
            const float4 v = __ldg(reinterpret_cast<const float4*>(x) + q);
            float4 r;
            r.x = v.x > 0.f ? g.x : 0.f;
            r.y = v.y > 0.f ? g.y : 0.f;
            r.z = v.z > 0.f ? g.z : 0.f;
            r.w = v.w > 0.f ? g.w : 0.f;
            reinterpret_cast<float4*>(gx)[q] = r;
        }
        done = quads * 4;
    }
    for (int64_t i = done + start; i < n; i += stride) gx[i] = x[i] > 0.f ? gy[i] : 0.f;
}

// ------------------------------------------------------------------ softmax, rows (inner == 1)
__device__ __forceinline__ float softmax_out(float x, float m, float inv_s, float log_s, bool log) {
    return log ? (x - m - log_s) : __expf(x - m) * inv_s;
}

// x, y are (rows, dim); one warp per row (dim <= 1024), 8 rows per block.
__global__ void softmax_rows_warp_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows,
                                         int dim, bool log) {
    const int lane = threadIdx.x % 32;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;  // whole warps leave together
    const float* xr = x + row * dim;
    float* yr = y + row * dim;
    float m = -INFINITY, s = 0.f;
    for (int i = lane; i < dim; i += 32) softmax_push(m, s, __ldg(xr + i));
    warp_softmax_merge(m, s);
    const float inv_s = 1.f / s, log_s = logf(s);
    for (int i = lane; i < dim; i += 32) yr[i] = softmax_out(xr[i], m, inv_s, log_s, log);
}

// x, y are (rows, dim); one block per row for long rows, quads when dim % 4 == 0 and aligned.
__global__ void softmax_rows_block_kernel(const float* __restrict__ x, float* __restrict__ y, int dim,
                                          bool log, bool vec) {
    __shared__ float sh_m[32], sh_s[32];
    const int64_t row = blockIdx.x;
    const float* xr = x + row * dim;
    float* yr = y + row * dim;
    float m = -INFINITY, s = 0.f;
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        for (int q = threadIdx.x; q < dim / 4; q += blockDim.x) {
            const float4 v = __ldg(x4 + q);
            softmax_push(m, s, v.x);
            softmax_push(m, s, v.y);
            softmax_push(m, s, v.z);
            softmax_push(m, s, v.w);
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) softmax_push(m, s, __ldg(xr + i));
    }
    block_softmax_merge(m, s, sh_m, sh_s);
    const float inv_s = 1.f / s, log_s = logf(s);
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        float4* y4 = reinterpret_cast<float4*>(yr);
        for (int q = threadIdx.x; q < dim / 4; q += blockDim.x) {
            float4 v = x4[q];
            v.x = softmax_out(v.x, m, inv_s, log_s, log);
            v.y = softmax_out(v.y, m, inv_s, log_s, log);
            v.z = softmax_out(v.z, m, inv_s, log_s, log);
            v.w = softmax_out(v.w, m, inv_s, log_s, log);
            y4[q] = v;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = softmax_out(xr[i], m, inv_s, log_s, log);
    }
}

// ------------------------------------------------------------------ softmax, strided (inner > 1)
// x, y are (outer, dim, inner); one thread per (outer, inner) column, coalesced along inner.
__global__ void softmax_columns_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t outer,
                                       int64_t dim, int64_t inner, bool log) {
    const int64_t cols = outer * inner;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t o = c / inner, i = c % inner;
        const float* xc = x + o * dim * inner + i;
        float* yc = y + o * dim * inner + i;
        float m = -INFINITY, s = 0.f;
        for (int64_t d = 0; d < dim; ++d) softmax_push(m, s, __ldg(xc + d * inner));
        const float inv_s = 1.f / s, log_s = logf(s);
        for (int64_t d = 0; d < dim; ++d) yc[d * inner] = softmax_out(xc[d * inner], m, inv_s, log_s, log);
    }
}

// ------------------------------------------------------------------ backward
// softmax: gx = y * (g - sum(g*y)); log_softmax: gx = g - exp(y) * sum(g)
__device__ __forceinline__ float bwd_term(float g, float y, bool log) { return log ? g : g * y; }
__device__ __forceinline__ float bwd_out(float g, float y, float total, bool log) {
    return log ? g - __expf(y) * total : y * (g - total);
}

// gy, y, gx are (rows, dim); one warp per row
__global__ void softmax_bwd_rows_warp_kernel(const float* __restrict__ gy, const float* __restrict__ y,
                                             float* __restrict__ gx, int64_t rows, int dim, bool log) {
    const int lane = threadIdx.x % 32;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const float *gr = gy + row * dim, *yr = y + row * dim;
    float* out = gx + row * dim;
    float total = 0.f;
    for (int i = lane; i < dim; i += 32) total += bwd_term(__ldg(gr + i), __ldg(yr + i), log);
    total = warp_sum(total);
    for (int i = lane; i < dim; i += 32) out[i] = bwd_out(gr[i], yr[i], total, log);
}

// gy, y, gx are (rows, dim); one block per row
__global__ void softmax_bwd_rows_block_kernel(const float* __restrict__ gy, const float* __restrict__ y,
                                              float* __restrict__ gx, int dim, bool log) {
    __shared__ float sh[32];
    const int64_t row = blockIdx.x;
    const float *gr = gy + row * dim, *yr = y + row * dim;
    float* out = gx + row * dim;
    float total = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) total += bwd_term(__ldg(gr + i), __ldg(yr + i), log);
    total = block_sum(total, sh);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = bwd_out(gr[i], yr[i], total, log);
}

// gy, y, gx are (outer, dim, inner)
__global__ void softmax_bwd_columns_kernel(const float* __restrict__ gy, const float* __restrict__ y,
                                           float* __restrict__ gx, int64_t outer, int64_t dim, int64_t inner,
                                           bool log) {
    const int64_t cols = outer * inner;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t base = (c / inner) * dim * inner + c % inner;
        float total = 0.f;
        for (int64_t d = 0; d < dim; ++d) total += bwd_term(gy[base + d * inner], y[base + d * inner], log);
        for (int64_t d = 0; d < dim; ++d)
            gx[base + d * inner] = bwd_out(gy[base + d * inner], y[base + d * inner], total, log);
    }
}

constexpr int kWarpRowLimit = 1024;  // rows up to this long take one warp each
constexpr int kRowBlock = 512;       // threads per long row

}  // namespace

cudaError_t kernel_image_status() {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, relu_forward_kernel);
}

void relu_forward(const float* x, float* y, int64_t n, cudaStream_t stream) {
    const bool vec = aligned16(x) && aligned16(y);
    relu_forward_kernel<<<elementwise_blocks(vec ? n / 4 : n, kThreads), kThreads, 0, stream>>>(x, y, n, vec);
    CUDA_CHECK_LAUNCH("relu_forward_kernel");
}

void relu_backward(const float* gy, const float* x, float* gx, int64_t n, cudaStream_t stream) {
    const bool vec = aligned16(gy) && aligned16(x) && aligned16(gx);
    relu_backward_kernel<<<elementwise_blocks(vec ? n / 4 : n, kThreads), kThreads, 0, stream>>>(gy, x, gx, n,
                                                                                                  vec);
    CUDA_CHECK_LAUNCH("relu_backward_kernel");
}

void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log,
                     cudaStream_t stream) {
    if (inner == 1) {
        if (dim <= kWarpRowLimit) {
            const int rows_per_block = kThreads / 32;
            softmax_rows_warp_kernel<<<static_cast<unsigned>(ceil_div(outer, rows_per_block)), kThreads, 0,
                                       stream>>>(x, y, outer, static_cast<int>(dim), log);
            CUDA_CHECK_LAUNCH("softmax_rows_warp_kernel");
        } else {
            const bool vec = dim % 4 == 0 && aligned16(x) && aligned16(y);
            softmax_rows_block_kernel<<<static_cast<unsigned>(outer), kRowBlock, 0, stream>>>(
                x, y, static_cast<int>(dim), log, vec);
            CUDA_CHECK_LAUNCH("softmax_rows_block_kernel");
        }
        return;
    }
    softmax_columns_kernel<<<elementwise_blocks(outer * inner, kThreads), kThreads, 0, stream>>>(x, y, outer, dim,
                                                                                                 inner, log);
    CUDA_CHECK_LAUNCH("softmax_columns_kernel");
}

void softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner,
                      bool log, cudaStream_t stream) {
    if (inner == 1) {
        if (dim <= kWarpRowLimit) {
            const int rows_per_block = kThreads / 32;
            softmax_bwd_rows_warp_kernel<<<static_cast<unsigned>(ceil_div(outer, rows_per_block)), kThreads, 0,
                                           stream>>>(gy, y, gx, outer, static_cast<int>(dim), log);
            CUDA_CHECK_LAUNCH("softmax_bwd_rows_warp_kernel");
        } else {
            softmax_bwd_rows_block_kernel<<<static_cast<unsigned>(outer), kRowBlock, 0, stream>>>(
                gy, y, gx, static_cast<int>(dim), log);
            CUDA_CHECK_LAUNCH("softmax_bwd_rows_block_kernel");
        }
        return;
    }
    softmax_bwd_columns_kernel<<<elementwise_blocks(outer * inner, kThreads), kThreads, 0, stream>>>(
        gy, y, gx, outer, dim, inner, log);
    CUDA_CHECK_LAUNCH("softmax_bwd_columns_kernel");
}

}  // namespace deepkern::cuda
