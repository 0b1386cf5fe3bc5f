// Fused optimizer updates: one grid-stride pass reads param, grad and state once and writes
// param and state once. Bias corrections are computed on the host in double.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/optim.cuh"

namespace deepkern::cuda {
namespace {

constexpr int kThreads = 256;

// p, grad, velocity are (n,)
__global__ void sgd_kernel(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ velocity,
                           int64_t n, float lr, float momentum, float wd, bool nesterov) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float g = grad[i] + wd * p[i];
        float step = g;
        if (velocity != nullptr && momentum > 0.f) {
            const float v = momentum * velocity[i] + g;
            velocity[i] = v;
            step = nesterov ? g + momentum * v : v;
        }
        p[i] -= lr * step;
    }
}

// p, grad, m, v are (n,); c1 = 1 - beta1^step, c2 = 1 - beta2^step
__global__ void adam_kernel(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m,
                            float* __restrict__ v, int64_t n, float lr, float beta1, float beta2, float eps,
                            float wd, float c1, float c2) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float g = grad[i] + wd * p[i];
        const float mi = beta1 * m[i] + (1.f - beta1) * g;
        const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        // correctly rounded sqrt/div even under --use_fast_math: eps is tiny and v_hat can be too
        p[i] -= lr * __fdiv_rn(__fdiv_rn(mi, c1), __fsqrt_rn(__fdiv_rn(vi, c2)) + eps);
    }
}

// p, grad, s are (n,)
__global__ void rmsprop_kernel(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ s,
                               int64_t n, float lr, float alpha, float eps, float wd) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float g = grad[i] + wd * p[i];
        const float si = alpha * s[i] + (1.f - alpha) * g * g;
        s[i] = si;
        p[i] -= lr * __fdiv_rn(g, __fsqrt_rn(si) + eps);
    }
}

}  // namespace

void sgd_update(float* p, const float* grad, float* velocity, int64_t n, float lr, float momentum,
                float weight_decay, bool nesterov, cudaStream_t stream) {
    sgd_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(p, grad, velocity, n, lr, momentum,
                                                                         weight_decay, nesterov);
    CUDA_CHECK_LAUNCH("sgd_kernel");
}

void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, int64_t step, float lr, float beta1,
                 float beta2, float eps, float weight_decay, cudaStream_t stream) {
    const float c1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step)));
    const float c2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step)));
    adam_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(p, grad, m, v, n, lr, beta1, beta2, eps,
                                                                          weight_decay, c1, c2);
    CUDA_CHECK_LAUNCH("adam_kernel");
}

void rmsprop_update(float* p, const float* grad, float* square_avg, int64_t n, float lr, float alpha, float eps,
                    float weight_decay, cudaStream_t stream) {
    rmsprop_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(p, grad, square_avg, n, lr, alpha,
                                                                             eps, weight_decay);
    CUDA_CHECK_LAUNCH("rmsprop_kernel");
}

}  // namespace deepkern::cuda
