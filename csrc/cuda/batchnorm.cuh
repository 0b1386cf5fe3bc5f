// Batch normalisation over (N, C, S) activations on the GPU (S = product of the spatial sizes).
// Semantics as csrc/cpu/batchnorm.hpp; the per-channel sums are double, reduced without atomics
// in a fixed order that depends only on the shape (the same bits on every run).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace deepkern::cuda {

// Doubles of scratch the kernels below need for an (N, C, S) input (the caller allocates them).
int64_t batch_norm_workspace(int64_t N, int64_t C, int64_t S);

// x, y (N, C, S); weight, bias (C,) or null; running_mean/var (C,) or null (updated in place);
// mean, invstd (C,) written; workspace: batch_norm_workspace(N, C, S) doubles.
void batch_norm_forward_train(const float* x, const float* weight, const float* bias, float* running_mean,
                              float* running_var, float* y, float* mean, float* invstd, double* workspace,
                              int64_t N, int64_t C, int64_t S, float momentum, float eps, bool unbiased,
                              cudaStream_t stream);

// Normalises with the running statistics; mean/invstd (C,) receive them.
void batch_norm_forward_eval(const float* x, const float* weight, const float* bias, const float* running_mean,
                             const float* running_var, float* y, float* mean, float* invstd, int64_t N,
                             int64_t C, int64_t S, float eps, cudaStream_t stream);

// g, x, gx (N, C, S); weight (C,) or null; mean, invstd (C,) from the forward; gw, gb (C,) or null.
void batch_norm_backward(const float* g, const float* x, const float* weight, const float* mean,
                         const float* invstd, float* gx, float* gw, float* gb, double* workspace, int64_t N,
                         int64_t C, int64_t S, bool training, cudaStream_t stream);

}  // namespace deepkern::cuda
