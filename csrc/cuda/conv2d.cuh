// conv2d (NCHW cross-correlation) on the GPU as implicit GEMMs: forward, input gradient,
// weight gradient; bias gradient as a per-channel reduction.
#pragma once
#include <cuda_runtime.h>

#include "common/geometry.hpp"

namespace deepkern::cuda {

using deepkern::Conv2dShape;  // common/geometry.hpp

// x is (N, C, H, W), w is (OC, C, KH, KW), bias (OC,) or null, y is (N, OC, OH, OW)
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y,
                    cudaStream_t stream);

// gy is (N, OC, OH, OW); gx like x or null (not computed), gw like w, gb (OC,) or null; all overwritten
void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w, float* gx, float* gw,
                     float* gb, cudaStream_t stream);

}  // namespace deepkern::cuda
