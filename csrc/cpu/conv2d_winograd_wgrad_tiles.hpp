// The Winograd F(3x3, 2x2) weight gradient's data transforms (conv2d_winograd_wgrad.cpp), written
// once in plain C++ that the compiler vectorises over a row of tiles. Included by
// conv2d_winograd_wgrad.cpp (generic x86-64), conv2d_winograd_wgrad_avx2.cpp and
// conv2d_winograd_wgrad_avx512.cpp, each compiled with its own ISA flags; everything here has
// internal linkage and uses no std:: templates (no ISA-specific copy can be shared with another
// TU). The transforms are additions and subtractions only, in the same order in every build, so
// each build gives the same bits.
//
// 1-D F(3, 2) (points 0, 1, -1, inf), the dual of Lavin's F(2, 3): for a 4-sample input d and a
// 2-tap "filter" g (the output gradient), z[k] = sum_i g[i] d[i + k], k = 0..2, is
//   z = Gt [(A g) * (Bt d)]   with
//   Bt d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
//   A g  = (g0, g0 + g1, g0 - g1, g1)            (the last row's sign is moved into Gt)
//   Gt   = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, -1]]
// and nested for 2-D: V = Bt d B (4x4 input patch), U = A g A^T (2x2 gradient tile), 3x3 out = Gt (U * V) G.
#pragma once

#include <cstdint>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "cpu/conv2d_winograd_wgrad.hpp"
#include "cpu/transpose16_avx512.hpp"

namespace deepkern::cpu::wgrad {
namespace {

// The transforms work on channel-last copies of a unit's rows so that one vector holds one tile's
// value for 16 (8, 4) channels: every loop below runs over the channels, with no tails for the
// usual multiples of 16, whatever the image width.


// dst[p * C + c] = src[c * cs + p] for p < n, c < C: pixels of C channel planes, channels last
void to_channels_last(const float* src, int64_t cs, int C, int n, float* dst) {
#ifdef __AVX512F__
    for (int c0 = 0; c0 < C; c0 += 16)
        for (int p0 = 0; p0 < n; p0 += 16)
            simd::transpose16(src + c0 * cs + p0, cs, n - p0 < 16 ? n - p0 : 16, C - c0 < 16 ? C - c0 : 16,
                        dst + static_cast<int64_t>(p0) * C + c0, C);
#else
    // 8x8 blocks: each source row's 8 floats and each destination row's 8 floats stay in L1
    for (int c0 = 0; c0 < C; c0 += 8)
        for (int p0 = 0; p0 < n; p0 += 8) {
            const int ce = C - c0 < 8 ? C - c0 : 8, pe = n - p0 < 8 ? n - p0 : 8;
            for (int p = 0; p < pe; ++p)
                for (int c = 0; c < ce; ++c)
                    dst[static_cast<int64_t>(p0 + p) * C + c0 + c] = src[(c0 + c) * cs + p0 + p];
        }
#endif
}

// Asks for row `row` of each of C planes (plane stride cs, rows of n floats): the transposes read
// one short row from each of many planes, too many streams for the hardware prefetcher.
inline void prefetch_rows(const float* first, int64_t cs, int C, int n) {
    for (int c = 0; c < C; ++c) {
        __builtin_prefetch(first + c * cs);
        __builtin_prefetch(first + c * cs + n - 1);
    }
}

// xt (R, Wq, C) = the padded input rows [r0, r0 + R) of one image x (C, H, W), channels last:
// padded row r is input row r - PH, padded column q input column q - PW (zero outside the image)
void input_rows_hwc(const float* x, int C, int H, int W, int PH, int PW, int r0, int R, int Wq, float* xt) {
    const int64_t hw = static_cast<int64_t>(H) * W;
    for (int r = 0; r < R; ++r) {
        float* dst = xt + static_cast<int64_t>(r) * Wq * C;
        const int h = r0 + r - PH;
        if (h < 0 || h >= H) {
            for (int64_t i = 0; i < static_cast<int64_t>(Wq) * C; ++i) dst[i] = 0.0f;
            continue;
        }
        if (h + 2 < H) prefetch_rows(x + static_cast<int64_t>(h + 2) * W, hw, C, W);
        for (int64_t i = 0; i < static_cast<int64_t>(PW) * C; ++i) dst[i] = 0.0f;
        to_channels_last(x + static_cast<int64_t>(h) * W, hw, C, W, dst + static_cast<int64_t>(PW) * C);
        for (int64_t i = static_cast<int64_t>(PW + W) * C; i < static_cast<int64_t>(Wq) * C; ++i) dst[i] = 0.0f;
    }
}

// gt (R, 2*TW, OC) = gradient rows [y0, y0 + R) of one image g (OC, OH, OW), channels last, zero
// past OH and OW
void grad_rows_hwc(const float* g, int OC, int OH, int OW, int y0, int R, int TW, float* gt) {
    const int64_t ohw = static_cast<int64_t>(OH) * OW, row = static_cast<int64_t>(2 * TW) * OC;
    for (int r = 0; r < R; ++r) {
        float* dst = gt + r * row;
        const int y = y0 + r;
        if (y >= OH) {
            for (int64_t i = 0; i < row; ++i) dst[i] = 0.0f;
            continue;
        }
        if (y + 2 < OH) prefetch_rows(g + static_cast<int64_t>(y + 2) * OW, ohw, OC, OW);
        to_channels_last(g + static_cast<int64_t>(y) * OW, ohw, OC, OW, dst);
        for (int64_t i = static_cast<int64_t>(OW) * OC; i < row; ++i) dst[i] = 0.0f;
    }
}

// Tiles of BT tile rows x TW columns from xt (2*BT + 2, 2*TW + 2, C) -> v: plane xi at v + xi * vs,
// tile (ty, tx)'s C values at v + (ty * TW + tx) * C. Tile (ty, tx) reads the 4x4 patch at row 2ty,
// column 2tx of xt.
void input_tiles_span(const float* xt, int C, int TW, int BT, float* v, int64_t vs) {
    const int64_t cs = C, rs = static_cast<int64_t>(2 * TW + 2) * C;  // column and row strides of xt
    for (int ty = 0; ty < BT; ++ty)
        for (int tx = 0; tx < TW; ++tx) {
            const float* p = xt + 2 * ty * rs + 2 * tx * cs;
            float* out = v + (static_cast<int64_t>(ty) * TW + tx) * C;
#pragma omp simd
            for (int c = 0; c < C; ++c) {
                float w[4][4];  // w[r][j]: row r of the patch, transformed along the columns
                for (int r = 0; r < 4; ++r) {
                    const float* pr = p + r * rs + c;
                    const float a = pr[0], b = pr[cs], cc = pr[2 * cs], d = pr[3 * cs];
                    w[r][0] = a - cc;
                    w[r][1] = b + cc;
                    w[r][2] = cc - b;
                    w[r][3] = b - d;
                }
                for (int j = 0; j < 4; ++j) {  // the same transform down the rows
                    out[(0 * 4 + j) * vs + c] = w[0][j] - w[2][j];
                    out[(1 * 4 + j) * vs + c] = w[1][j] + w[2][j];
                    out[(2 * 4 + j) * vs + c] = w[2][j] - w[1][j];
                    out[(3 * 4 + j) * vs + c] = w[1][j] - w[3][j];
                }
            }
        }
}

// Tiles of BT tile rows x TW columns from gt (2*BT, 2*TW, OC) -> u: plane xi at u + xi * us,
// tile (ty, tx)'s OC values at u + (ty * TW + tx) * OC. Tile (ty, tx) is gt's 2x2 block at (2ty, 2tx).
void grad_tiles_span(const float* gt, int OC, int TW, int BT, float* u, int64_t us) {
    const int64_t cs = OC, rs = static_cast<int64_t>(2 * TW) * OC;
    for (int ty = 0; ty < BT; ++ty)
        for (int tx = 0; tx < TW; ++tx) {
            const float* p = gt + 2 * ty * rs + 2 * tx * cs;
            const int64_t at = (static_cast<int64_t>(ty) * TW + tx) * OC;
            // two passes of 8 planes: with all 16 output pointers live the loop runs out of registers
            for (int half = 0; half < 2; ++half) {
                float* q0 = u + (8 * half + 0) * us + at;
                float* q1 = u + (8 * half + 1) * us + at;
                float* q2 = u + (8 * half + 2) * us + at;
                float* q3 = u + (8 * half + 3) * us + at;
                float* q4 = u + (8 * half + 4) * us + at;
                float* q5 = u + (8 * half + 5) * us + at;
                float* q6 = u + (8 * half + 6) * us + at;
                float* q7 = u + (8 * half + 7) * us + at;
#pragma omp simd
                for (int o = 0; o < OC; ++o) {
                    const float g00 = p[o], g01 = p[cs + o], g10 = p[rs + o], g11 = p[rs + cs + o];
                    // each row transformed along the columns, then the same down the two rows:
                    // planes 0-3 a, 4-7 a + b, 8-11 a - b, 12-15 b
                    const float a0 = g00, a1 = g00 + g01, a2 = g00 - g01, a3 = g01;
                    const float b0 = g10, b1 = g10 + g11, b2 = g10 - g11, b3 = g11;
                    if (half == 0) {
                        q0[o] = a0, q1[o] = a1, q2[o] = a2, q3[o] = a3;
                        q4[o] = a0 + b0, q5[o] = a1 + b1, q6[o] = a2 + b2, q7[o] = a3 + b3;
                    } else {
                        q0[o] = a0 - b0, q1[o] = a1 - b1, q2[o] = a2 - b2, q3[o] = a3 - b3;
                        q4[o] = b0, q5[o] = b1, q6[o] = b2, q7[o] = b3;
                    }
                }
            }
        }
}

const TileKernels kTileKernels{input_rows_hwc, grad_rows_hwc, input_tiles_span, grad_tiles_span};

}  // namespace
}  // namespace deepkern::cpu::wgrad
