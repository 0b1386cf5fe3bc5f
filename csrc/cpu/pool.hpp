// max_pool2d and avg_pool2d (NCHW), forward and backward.
#pragma once

#include "common/geometry.hpp"

namespace deepkern::cpu {

using deepkern::Pool2dShape;  // common/geometry.hpp

// x is (N, C, H, W), y is (N, C, OH, OW). Max: padding is -inf; ties go to the first
// maximum in row-major window order. Avg: padded zeros count in the divisor (KH*KW).
void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y);
void max_pool2d_backward(const Pool2dShape& s, const float* gy, const float* x, float* gx);
void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y);
void avg_pool2d_backward(const Pool2dShape& s, const float* gy, float* gx);

namespace pool_isa {
// pool_avx512.cpp: one (H, W) plane of the 2x2 / stride-2 max-pool backward; call only when
// the AVX-512 SIMD variant is active (simd_variant.hpp).
void max2x2_backward_plane_avx512(const float* gy, const float* x, float* gx, int H, int W, int OH, int OW);
}  // namespace pool_isa

}  // namespace deepkern::cpu
