// The first conv layer of an image network (few input channels: C*KH*KW <= 32 taps), computed
// directly instead of through im2col + GEMM: the forward fused with bias + ReLU + 2x2 max-pool,
// and the weight gradient.
//
// With so few taps the GEMM form spends more on storing its output (every conv output written,
// then read back by the pool) and on copying columns than on multiplying: the seed CNN's 1 -> 32
// layer ran at ~25% of the FP32 peak that way. Here each pooled row is computed in registers: lanes
// run along the pooled row (16 windows), one accumulator per window tap (the 4 conv outputs of a
// 2x2 window) and output channel, and the pool, ReLU and route are taken before anything is
// stored. The sums are the GEMM's (fused multiply-adds in tap order from 0, then the bias), so
// the results are bit-identical to conv2d_relu_forward's GEMM path.
//
// The weight gradient gw[o, t] = sum over images and output pixels of gy * x (shifted by tap t)
// has a reduction of N*OH*OW and only OC x taps outputs: the GEMM form transposes or packs gy
// and the columns for a product whose C tile is mostly empty. Here lanes run along output rows,
// each lane accumulating its own column of products for every (channel, tap), and the 16 lane
// sums are added at the end. The order of every sum depends on the shapes only (never on the
// thread count). Behind the fused layer's 2x2 max-pool each lane's column gets at most one
// non-zero gradient per pair of rows (the two rows of a window column belong to one window, whose
// route picks one tap): there the kernel reads the pooled gradient and the routes directly and
// makes one multiply-add per pair of rows, of the routed row's x, instead of building the conv
// output gradient and multiplying its zeros too. Leaving out a zero's product changes no bit of a
// sum while x is finite (a lane's running sum is never -0, so adding +-0 leaves it as it is);
// with an infinity or NaN in x (0 * inf is NaN) the gradient is built and multiplied whole. So
// the fused layer's gradient and the plain conv2d_backward's agree bit for bit; the other SIMD
// variants use the GEMM path, which sums in another order (equal to rounding).
#pragma once

#include <cstdint>

#include "cpu/conv2d.hpp"

namespace deepkern::cpu {

// Whether conv2d_small_relu_pool runs this shape here: stride 1, C*KH*KW <= 32, a pooled output,
// and the AVX-512 SIMD and GEMM variants active (the results then equal the GEMM path's bits).
bool conv2d_small_relu_pool_applies(const Conv2dShape& s);

// x (N, C, H, W), w (OC, C, KH, KW), bias (OC,) or null -> y (N, OC, OH / 2, OW / 2) =
// max_pool2d(relu(conv2d(x, w) + bias), 2), route as conv2d_fused.hpp. Call only when applies.
void conv2d_small_relu_pool(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y,
                            uint8_t* route);

// Whether conv2d_small_weight_grad runs this shape: stride 1, C*KH*KW <= 32, the AVX-512 SIMD variant
bool conv2d_small_weight_grad_applies(const Conv2dShape& s);

// gw (OC, C, KH, KW) and gb (OC,) (null: not wanted) of conv2d, from gy (N, OC, OH, OW), or (gy
// null) from the images source builds. Call only when applies.
void conv2d_small_weight_grad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                              float* gw, float* gb);

namespace conv2d_isa {
// The arguments of one image's pooled rows (conv2d_small_avx512.cpp)
struct SmallConvRows {
    int C, KH, KW, OC;
    int PH, PW;              // pooled output
    const float* planes;     // (2, C, rows, U): the zero-padded image's even (0) and odd (1) columns
    int64_t rows, U;         // rows and row length of each plane
    const int64_t* offsets;  // (C*KH*KW, 4): where conv tap t of window tap k reads, from (2 * ph, pw0) of plane 0
    const float* w;          // (OC, C*KH*KW)
    const float* bias;       // (OC,) or null
    float* y;                // (OC, PH, PW)
    uint8_t* route;          // (OC, PH, PW)
};
// Pooled rows [ph0, ph1) of one image; call only when the AVX-512 SIMD variant is active
void small_relu_pool_rows_avx512(const SmallConvRows& a, int ph0, int ph1);

// One image's share of the weight gradient (conv2d_small_avx512.cpp)
struct SmallWeightGradImage {
    int taps, OC, OH, OW;
    const int64_t* offsets;  // (taps): where tap (c, i, j) reads in xp from output pixel (0, 0)
    const float* gy;         // (OC, OH * OW), or with route: the pooled gradient (OC, OH / 2 * OW / 2)
    const uint8_t* route;    // (OC, OH / 2 * OW / 2): the 2x2 max-pool's routes (conv2d_fused.hpp), or null
    const float* xp;         // (C, Hp, Wp): the zero-padded image (the image itself without padding)
    int64_t Wp;
    float* lanes;            // (OC, taps, 16): each lane's running sum of gw, accumulated onto
    float* bias_lanes;       // (OC, 16): the same of gb, or null
};
// Call only when the AVX-512 SIMD variant is active
void small_weight_grad_image_avx512(const SmallWeightGradImage& a);
}  // namespace conv2d_isa

}  // namespace deepkern::cpu
