// Fused optimizer updates on the GPU, in place over flat (n,) arrays; the formulas of
// python/deepkern/backends/numpy.py (PyTorch's SGD, Adam with L2 weight decay, RMSprop).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace deepkern::cuda {

// g = grad + wd*p; v = momentum*v + g; p -= lr * (nesterov ? g + momentum*v : v); velocity may be
// null when momentum == 0 (then p -= lr * g).
void sgd_update(float* p, const float* grad, float* velocity, int64_t n, float lr, float momentum,
                float weight_decay, bool nesterov, cudaStream_t stream);
// Adam with bias correction at step (1-based).
void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, int64_t step, float lr, float beta1,
                 float beta2, float eps, float weight_decay, cudaStream_t stream);
// s = alpha*s + (1-alpha)*g^2; p -= lr * g / (sqrt(s) + eps)
void rmsprop_update(float* p, const float* grad, float* square_avg, int64_t n, float lr, float alpha, float eps,
                    float weight_decay, cudaStream_t stream);

}  // namespace deepkern::cuda
