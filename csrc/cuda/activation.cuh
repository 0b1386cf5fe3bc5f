// relu, softmax, log_softmax on the GPU, forward and backward.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace deepkern::cuda {

// cudaSuccess when the current GPU can run this module's kernels; cudaErrorNoKernelImageForDevice
// when the binary holds neither its architecture nor PTX that the driver can compile for it.
cudaError_t kernel_image_status();

// x, y, gy, gx are (n,)
void relu_forward(const float* x, float* y, int64_t n, cudaStream_t stream);
// gx = gy where x > 0, else 0
void relu_backward(const float* gy, const float* x, float* gx, int64_t n, cudaStream_t stream);

// Along the middle axis of a (outer, dim, inner) view; x and y are (outer, dim, inner).
// log = false: softmax; log = true: log_softmax.
void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log,
                     cudaStream_t stream);
// Given y = forward output: softmax gx = y * (gy - sum(gy * y)); log_softmax gx = gy - exp(y) * sum(gy).
void softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner,
                      bool log, cudaStream_t stream);

}  // namespace deepkern::cuda
