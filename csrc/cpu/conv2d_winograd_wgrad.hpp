// The weight gradient of 3x3 stride-1 conv2d layers through Winograd F(3x3, 2x2), fp32.
//
// gw[o, c, i, j] = sum_n sum_{y, x} gy[n, o, y, x] * xpad[n, c, y + i, x + j]. The output plane is cut
// into 2x2 tiles (gy zero-extended to even size); tile t reads the 4x4 input patch at its corner,
// and its share of gw is the 2-D correlation of that patch with the 2x2 gradient tile: Winograd
// F(3x3, 2x2), 16 products instead of 36. The sum over tiles, images and channels commutes with
// the output transform, so per transform point xi (16 of them)
//   M_xi (OC, C) = U_xi (OC, T) @ V_xi (T, C)      (T: every tile of every image)
// and gw[o, c] = Gt M[o, c] G (16 -> 9). See conv2d_winograd_wgrad_tiles.hpp for the matrices.
#pragma once

#include <cstdint>

#include "cpu/conv2d.hpp"

namespace deepkern::cpu {

// Whether the Winograd weight gradient runs for this layer under DEEPKERN_WINOGRAD (read at each
// call, conv2d_winograd.hpp's winograd_mode): "off" never, "on" (or "f2" / "f4") wherever the
// geometry allows it (3x3, stride 1, padding <= 2), "auto" (the default) where it measured
// faster (the same layers in bf16, conv2d_bf16.cpp). A bad value throws std::invalid_argument.
bool winograd_wgrad_applies(const Conv2dShape& s);

// gw (OC, C, 3, 3) and gb (OC,) or null, overwritten, from gy (N, OC, OH, OW) or (gy null) the
// source's image groups, and x (N, C, H, W). Returns false, with gw and gb unspecified, when a
// non-finite value appeared (inf/NaN in gy or x, or an overflow): the transforms can turn inf
// into NaN (inf - inf) where the direct sum gives inf, so the caller then computes both directly.
// bf16: the 16 long-K products on the transformed planes rounded to bf16 (gemm_bf16_buffered, fp32
// sums; only with bf16_available()), the transforms and gb in fp32 as without it.
bool conv2d_winograd_wgrad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                           float* gw, float* gb, bool bf16 = false);

namespace wgrad {
// The transforms, one build per SIMD variant (conv2d_winograd_wgrad_tiles.hpp).
struct TileKernels {
    // xt (R, Wq, C): padded input rows [r0, r0 + R) of one image x (C, H, W), channels last
    void (*input_rows)(const float* x, int C, int H, int W, int PH, int PW, int r0, int R, int Wq, float* xt);
    // gt (R, 2*TW, OC): gradient rows [y0, y0 + R) of one image g (OC, OH, OW), channels last
    void (*grad_rows)(const float* g, int OC, int OH, int OW, int y0, int R, int TW, float* gt);
    // BT x TW tiles of xt (2*BT + 2, 2*TW + 2, C) -> 16 planes of v (tiles, C), plane stride vs
    void (*input)(const float* xt, int C, int TW, int BT, float* v, int64_t vs);
    // BT x TW tiles of gt (2*BT, 2*TW, OC) -> 16 planes of u (tiles, OC), plane stride us
    void (*grad)(const float* gt, int OC, int TW, int BT, float* u, int64_t us);
};
const TileKernels& generic_tiles();
const TileKernels& avx2_tiles();
const TileKernels& avx512_tiles();
}  // namespace wgrad

}  // namespace deepkern::cpu
