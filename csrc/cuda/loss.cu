// cross_entropy: one warp per row computes log-sum-exp online and the picked logit; the mean
// is a second, single-block reduction (deterministic: no atomics).
#include "cuda/common.cuh"
#include "cuda/loss.cuh"
#include "cuda/reduce.cuh"

namespace deepkern::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t label_at(const void* labels, bool is64, int64_t row) {
    return is64 ? static_cast<const int64_t*>(labels)[row] : static_cast<const int32_t*>(labels)[row];
}

// logits (N, C), row_loss (N,): row_loss[r] = logsumexp(logits[r]) - logits[r, label[r]]
__global__ void ce_rows_kernel(const float* __restrict__ logits, const void* __restrict__ labels, bool is64,
                               float* __restrict__ row_loss, int N, int C) {
    const int lane = threadIdx.x % 32;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;
    const float* xr = logits + row * C;
    float m = -INFINITY, s = 0.f;
    for (int i = lane; i < C; i += 32) softmax_push(m, s, __ldg(xr + i));
    warp_softmax_merge(m, s);
    if (lane == 0) {
        const int64_t label = label_at(labels, is64, row);
        row_loss[row] = (label < 0 || label >= C) ? NAN : (m + logf(s)) - xr[label];
    }
}

// row_loss (N,) -> loss[0] = mean, loss[1] = count of labels outside [0, C) (the host reads both
// in one copy when it reads the loss, so the range check costs no synchronisation of its own);
// one block of 1024 threads
__global__ void mean_kernel(const float* __restrict__ row_loss, const void* __restrict__ labels, bool is64,
                            float* __restrict__ loss, int N, int C) {
    __shared__ float sh[32], sh_bad[32];
    float acc = 0.f, bad = 0.f;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        acc += row_loss[i];
        const int64_t label = label_at(labels, is64, i);
        bad += (label < 0 || label >= C) ? 1.f : 0.f;
    }
    acc = block_sum(acc, sh);
    bad = block_sum(bad, sh_bad);
    if (threadIdx.x == 0) {
        loss[0] = acc / static_cast<float>(N);
        loss[1] = bad;
    }
}

// logits, glogits (N, C)
__global__ void ce_backward_kernel(const float* __restrict__ logits, const void* __restrict__ labels, bool is64,
                                   float* __restrict__ glogits, int N, int C, float scale) {
    const int lane = threadIdx.x % 32;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;
    const float* xr = logits + row * C;
    float* gr = glogits + row * C;
    float m = -INFINITY, s = 0.f;
    for (int i = lane; i < C; i += 32) softmax_push(m, s, __ldg(xr + i));
    warp_softmax_merge(m, s);
    const float inv_s = 1.f / s;
    const int64_t label = label_at(labels, is64, row);
    const bool valid = label >= 0 && label < C;
    for (int i = lane; i < C; i += 32) {
        const float p = __expf(xr[i] - m) * inv_s;
        gr[i] = valid ? scale * (p - (i == label ? 1.f : 0.f)) : NAN;
    }
}

}  // namespace

void cross_entropy_forward(const float* logits, const void* labels, bool labels_int64, float* row_loss,
                           float* loss, int N, int C, cudaStream_t stream) {
    const int rows_per_block = kThreads / 32;
    ce_rows_kernel<<<static_cast<unsigned>(ceil_div(N, rows_per_block)), kThreads, 0, stream>>>(
        logits, labels, labels_int64, row_loss, N, C);
    CUDA_CHECK_LAUNCH("ce_rows_kernel");
    mean_kernel<<<1, 1024, 0, stream>>>(row_loss, labels, labels_int64, loss, N, C);
    CUDA_CHECK_LAUNCH("mean_kernel");
}

void cross_entropy_backward(const float* logits, const void* labels, bool labels_int64, float* glogits, int N,
                            int C, float grad, cudaStream_t stream) {
    const int rows_per_block = kThreads / 32;
    ce_backward_kernel<<<static_cast<unsigned>(ceil_div(N, rows_per_block)), kThreads, 0, stream>>>(
        logits, labels, labels_int64, glogits, N, C, grad / static_cast<float>(N));
    CUDA_CHECK_LAUNCH("ce_backward_kernel");
}

}  // namespace deepkern::cuda
