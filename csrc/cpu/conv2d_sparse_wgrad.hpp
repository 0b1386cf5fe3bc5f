// The weight gradient of a conv layer whose output gradient is mostly zero, computed from its
// non-zero entries alone (conv2d_sparse_wgrad.cpp).
//
// Behind a 2x2 max-pool and a ReLU at most one conv output in four gets a gradient (seed CNN
// conv2: ~20% of its 11x11 outputs). The weight gradient is
//   gw[o, c, i, j] = sum over the non-zero gy[n, o, oh, ow] of gy[n, o, oh, ow] * xpad[n, c, oh*SH + i, ow*SW + j]
// so each non-zero adds KH*KW*C products: fewer than the dense product's (all OH*OW outputs) or
// Winograd F(3x3, 2x2)'s 16 per 2x2 tile per (o, c) pair once fewer than ~1/3 of the outputs
// count. Each image is copied channels last and zero-padded, xt (Hp, Wp, C), so a non-zero's
// window is KH rows of KW*C contiguous floats, added with the gradient as factor onto gw'[o]
// (KH, KW, C); gw is gw' reordered. Every element's sum runs over the non-zeros in image order,
// then pixel order (row-major), as a product rounded and then added (no fused multiply-add), so
// every SIMD build gives the same bits and the result does not depend on the thread count (fixed
// chunks of images, their partial sums added in chunk order).
#pragma once

#include <cstdint>

#include "cpu/conv2d.hpp"

namespace deepkern::cpu {

// Whether the layer's shape and DEEPKERN_WINOGRAD let the sparse weight gradient run: at least 8
// input channels (the adds run along the channels); not where DEEPKERN_WINOGRAD=on/f2/f4 forces
// the Winograd weight gradient onto the layer. conv2d_sparse_wgrad still declines dense gradients.
bool sparse_wgrad_wanted(const Conv2dShape& s);

// Whether conv2d_sparse_wgrad would take this gradient by its count: wanted, and at most a third of
// the gradients not zero (always so behind a 2x2 pool, without counting). bf16 precision runs the
// whole backward in fp32 there (conv2d_bf16.cpp).
bool sparse_wgrad_takes(const Conv2dShape& s, const float* gy, const ConvGradSource* source);

// gw (OC, C, KH, KW) and gb (OC,) or null, overwritten, from gy (N, OC, OH, OW) or (gy null) the
// source, and x (N, C, H, W). Returns false, leaving gw and gb unspecified, when more than a third
// of the gradients are not zero (the dense paths are faster) or a value is not finite: a skipped
// zero gradient times an infinite x, or a non-finite gradient times a padding zero, is NaN in the
// dense sum; the caller then takes its other paths.
bool conv2d_sparse_wgrad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                         float* gw, float* gb);

namespace sparse_wgrad {
// acc (KH, span) += value[t] * xt[at[t] + i * row + e] for t < count (in order), row i < KH, e < span:
// each product rounded, then added. AVX-512 build (conv2d_sparse_wgrad_avx512.cpp).
void add_windows_avx512(const int32_t* at, const float* value, int count, const float* xt, int64_t row, int KH,
                        int span, float* acc);
// the plain C++ kernel (conv2d_sparse_wgrad_rows.hpp) built for AVX2 (conv2d_sparse_wgrad_avx2.cpp): the same bits
void add_windows_avx2(const int32_t* at, const float* value, int count, const float* xt, int64_t row, int KH,
                      int span, float* acc);
}  // namespace sparse_wgrad

}  // namespace deepkern::cpu
