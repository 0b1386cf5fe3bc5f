// conv2d (NCHW cross-correlation), forward and backward.
#pragma once

#include "common/geometry.hpp"
#include <cstdint>

namespace deepkern::cpu {

using deepkern::Conv2dShape;  // common/geometry.hpp

// x is (N, C, H, W), w is (OC, C, KH, KW), bias (OC,) or null, y is (N, OC, OH, OW)
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);

// gy is (N, OC, OH, OW); gx like x or null (no input gradient: the dX GEMMs and col2im are
// skipped), gw like w, gb (OC,) or null; all overwritten
void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                     float* gx, float* gw, float* gb);

namespace conv2d_isa {
// conv2d_avx512.cpp, stride-1 geometry only; call only when the AVX-512 SIMD variant is active
// (simd_variant.hpp). cols is (C*KH*KW, OH*OW) with row stride ld, x one image (C, H, W).
void im2col_s1_avx512(const Conv2dShape& s, const float* x, float* cols, int64_t ld);
// x is overwritten (no zero fill needed)
void col2im_s1_avx512(const Conv2dShape& s, const float* cols, int64_t ld, float* x);
}  // namespace conv2d_isa

}  // namespace deepkern::cpu
