// max_pool2d and avg_pool2d (NCHW), forward and backward.
#pragma once

#include <cstdint>

#include "common/geometry.hpp"

namespace deepkern::cpu {

using deepkern::Pool2dShape;  // common/geometry.hpp

// x is (N, C, H, W), y is (N, C, OH, OW). Max: padding is -inf; ties go to the first
// maximum in row-major window order. Avg: padded zeros count in the divisor (KH*KW).
void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y);
void max_pool2d_backward(const Pool2dShape& s, const float* gy, const float* x, float* gx);
void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y);
void avg_pool2d_backward(const Pool2dShape& s, const float* gy, float* gx);

// The ReLU + 2x2 / stride-2 max-pool of the fused conv layers (conv2d_fused.cpp), one plane at a
// time; PH = H / 2, PW = W / 2 (an odd last row/column is in no window). route records where each
// output's gradient goes: the window position (0 a, 1 b / 2 c, 3 d) of the first maximum
// (a NaN is the maximum, as in max_pool2d) when the output is > 0, else kNoRoute (the ReLU
// blocks it: the output is <= 0 or NaN, as relu_backward).
constexpr uint8_t kNoRoute = 4;
// x plane (H, W) with row stride ld -> y (PH, PW) = relu(window max), route (PH, PW)
void max2x2_relu_plane(const float* x, int64_t ld, float* y, uint8_t* route, int PH, int PW);
// gy (PH, PW), route (PH, PW) -> g plane (H, W) with row stride ld: each gy at its routed position,
// 0 everywhere else (rows/columns in no window included)
void max2x2_route_backward_plane(const float* gy, const uint8_t* route, float* g, int64_t ld, int H, int W,
                                 int PH, int PW);
// The routed gradients that are not zero (a NaN is not zero) of a plane gy (PH, PW), route (PH,
// PW), as pixels of the un-pooled plane (OW columns) and their values, in window order (row-major
// over (ph, pw)); returns their number. base (PH*PW) holds each window's first pixel,
// 2 ph * OW + 2 pw (max2x2_window_bases); window k's gradient goes to base[k] + (r / 2) * OW + r % 2.
// pixel and value need room for PH*PW + 16 (whole-vector stores).
int max2x2_route_nonzeros(const float* gy, const uint8_t* route, const int32_t* base, int n, int OW, int32_t* pixel,
                          float* value);
// base (PH*PW) for max2x2_route_nonzeros
void max2x2_window_bases(int OW, int PH, int PW, int32_t* base);

namespace pool_isa {
// pool_avx512.cpp: call only when the AVX-512 SIMD variant is active (simd_variant.hpp).
// One (H, W) plane of the 2x2 / stride-2 max-pool backward.
void max2x2_backward_plane_avx512(const float* gy, const float* x, float* gx, int H, int W, int OH, int OW);
// One plane of the 2x2 / stride-2 max-pool forward: x (H, W) -> y (OH, OW)
void max2x2_plane_avx512(const float* x, float* y, int W, int OH, int OW);
// The fused kernels above (same arguments)
void max2x2_relu_plane_avx512(const float* x, int64_t ld, float* y, uint8_t* route, int PH, int PW);
void max2x2_route_backward_plane_avx512(const float* gy, const uint8_t* route, float* g, int64_t ld, int H,
                                        int W, int PH, int PW);
int max2x2_route_nonzeros_avx512(const float* gy, const uint8_t* route, const int32_t* base, int n, int OW,
                                 int32_t* pixel, float* value);
}  // namespace pool_isa

}  // namespace deepkern::cpu
