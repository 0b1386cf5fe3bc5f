// conv2d (NCHW cross-correlation) with bf16 products and fp32 sums: the conv2d.cpp GEMMs run
// through the AVX512-BF16 GEMM (gemm_bf16.hpp), and 3x3 stride-1 layers where DEEPKERN_WINOGRAD
// picks it through bf16 Winograd (conv2d_winograd.hpp, conv2d_winograd_wgrad.hpp: the transformed
// tiles and weights rounded instead of x and w). Same arguments and results as conv2d.hpp's
// kernels up to that rounding; throws std::runtime_error when bf16_available() is false.
#pragma once

#include "cpu/conv2d.hpp"

namespace deepkern::cpu {

// Whether the bf16 forward and weight gradient of this layer run fp32's kernels (few taps:
// C*KH*KW <= 9, in DEEPKERN_WINOGRAD's automatic mode; conv2d_bf16.cpp). The fused layers ask it
// first, so that they run fp32's fused kernels (conv2d_small.hpp) with the plain ops' bits.
bool conv2d_bf16_forward_runs_fp32(const Conv2dShape& s);

// x is (N, C, H, W), w is (OC, C, KH, KW), bias (OC,) or null, y is (N, OC, OH, OW)
void conv2d_forward_bf16(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);

// gy is (N, OC, OH, OW); gx like x or null (no input gradient), gw like w, gb (OC,) or null;
// all overwritten. The bias gradient sums gy in fp32 (no product, nothing rounded).
void conv2d_backward_bf16(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                          float* gx, float* gw, float* gb);

// The fused layers' hooks (conv2d.hpp), in bf16: the output handed to a sink, max(., 0) in the
// GEMM's store (NaN kept), the output gradient built by a source
void conv2d_forward_bf16(const Conv2dShape& s, const float* x, const float* w, const float* bias,
                         const ConvOutputSink& sink);
void conv2d_forward_relu_bf16(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);
void conv2d_backward_bf16(const Conv2dShape& s, const ConvGradSource& gy_source, const float* x, const float* w,
                          float* gx, float* gw, float* gb);

}  // namespace deepkern::cpu
