// max_pool2d and avg_pool2d (NCHW) on the GPU, forward and backward.
#pragma once
#include <cuda_runtime.h>

#include "common/geometry.hpp"

namespace deepkern::cuda {

using deepkern::Pool2dShape;  // common/geometry.hpp

// x is (N, C, H, W), y is (N, C, OH, OW). Max: padding is -inf; ties go to the first maximum in
// row-major window order. Avg: padded zeros count in the divisor (KH*KW).
void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y, cudaStream_t stream);
// gy is (N, C, OH, OW), gx (N, C, H, W) overwritten
void max_pool2d_backward(const Pool2dShape& s, const float* gy, const float* x, float* gx, cudaStream_t stream);
void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y, cudaStream_t stream);
void avg_pool2d_backward(const Pool2dShape& s, const float* gy, float* gx, cudaStream_t stream);

}  // namespace deepkern::cuda
