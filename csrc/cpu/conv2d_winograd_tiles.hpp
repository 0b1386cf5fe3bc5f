// The Winograd F(2x2, 3x3) tile transforms, written once in plain C++ over blocks of kLanes
// tiles that the compiler vectorises. Included by conv2d_winograd.cpp (generic x86-64),
// conv2d_winograd_avx2.cpp and conv2d_winograd_avx512.cpp, each compiled with its own ISA flags;
// everything here has internal linkage and uses no std:: templates (as activation_rows.hpp), so
// no ISA-specific copy of a function is shared with another TU. Include it only from those files.
//
// The transforms are additions and subtractions only (no product the compiler could fuse into
// an FMA differently per ISA; the non-finite check only yields a flag), always in the same order,
// so every variant gives the same bits.
//
// A tile row is TW tiles side by side; the loops run over TWv = TW rounded up to kLanes, so each
// inner loop is a fixed number of whole vectors. The lanes past TW are computed on data that is
// there (zeros or real pixels) and stored where a later store overwrites them, or into slack the
// caller leaves at the end of each row (see conv2d_winograd.cpp).
#pragma once
#include <cstdint>

#include "cpu/conv2d_winograd.hpp"
#include "cpu/conv2d_winograd_tiles4.hpp"  // F(4x4, 3x3)

namespace deepkern::cpu::wino {
namespace {

// ---------------------------------------------------------------- input transform
// Row stride of the padded band input_tiles copies the input rows into
inline int padded_width(int TWv) { return 2 * (TWv + kLanes); }

// Floats of work space input_tiles needs for `rows` tile rows
inline int64_t input_work(int rows, int TW, int TWv) {
    const int64_t even_odd = 8 * ((static_cast<int64_t>(rows) + 1) * TW + kLanes);  // re, ro
    return even_odd + (2 * static_cast<int64_t>(rows) + 2) * padded_width(TWv);        // + the band
}

// The tiles of one input plane x (H, W) (rows contiguous) for tile rows [th0, th1): tile (th, tw)
// reads rows 2 th - PH .. + 3 and columns 2 tw - PW .. + 3, zero outside the plane.
// V = B^T d B of tile (th, tw) goes to v[xi * v_xi + (th - th0) * TW + tw], xi = 4 p + q; up to
// kLanes - 1 floats past the last tile are overwritten. work: input_work(th1 - th0, TW, TWv).
// Returns 0, or NaN when an input the tiles read is inf or NaN (or the transform overflows).
//
// The band's input rows are first copied into a zero-padded band (so the loads below never wait
// on just-stored data); then the row direction, each input row once, with d_k = row[2 tw + k]:
//   r0 = d0 - d2, r1 = d1 + d2, r2 = d2 - d1, r3 = d1 - d3,
// into even and odd rows (re, ro: per q, rows of TW tiles back to back); tile row i's rows
// 2i .. 2i + 3 are then re[i], ro[i], re[i + 1], ro[i + 1], so the column direction runs over all
// tiles of the band in whole vectors.
float input_tiles(const float* x, int H, int W, int PH, int PW, int th0, int th1, int TW, int TWv, float* v,
                  int64_t v_xi, float* work) {
    const int rows = th1 - th0, row0 = 2 * th0 - PH;  // input row of the band's first tile row
    const int64_t half = (static_cast<int64_t>(rows) + 1) * TW + kLanes;  // one q of re or ro
    const int wp = padded_width(TWv), in_rows = 2 * rows + 2;
    float* re = work;             // (4, half)
    float* ro = re + 4 * half;    // (4, half)
    float* band = ro + 4 * half;  // (in_rows, wp): band[i, j] = x[row0 + i, j - PW]
    float check[kLanes] = {};
    copy_band(x, H, W, PW, row0, in_rows, wp, band);
    for (int i = 0; i < in_rows; ++i) {
        const float* src = band + static_cast<int64_t>(i) * wp;
        float* r = (i % 2 ? ro : re) + (i / 2) * static_cast<int64_t>(TW);
        for (int t0 = 0; t0 < TWv; t0 += kLanes)
#pragma omp simd
            for (int l = 0; l < kLanes; ++l) {
                const int t = t0 + l;
                const float d0 = src[2 * t], d1 = src[2 * t + 1], d2 = src[2 * t + 2], d3 = src[2 * t + 3];
                r[t] = d0 - d2;
                r[half + t] = d1 + d2;
                r[2 * half + t] = d2 - d1;
                r[3 * half + t] = d1 - d3;
            }
    }
    const int n = rows * TW;
    for (int q = 0; q < 4; ++q) {
        const float* a = re + q * half;
        const float* b = ro + q * half;
        for (int t0 = 0; t0 < n; t0 += kLanes)
#pragma omp simd
            for (int l = 0; l < kLanes; ++l) {
                const int t = t0 + l;
                const float d0 = a[t], d1 = b[t], d2 = a[t + TW], d3 = b[t + TW];
                const float v0 = d0 - d2, v3 = d1 - d3;
                v[(0 + q) * v_xi + t] = v0;
                v[(4 + q) * v_xi + t] = d1 + d2;
                v[(8 + q) * v_xi + t] = d2 - d1;
                v[(12 + q) * v_xi + t] = v3;
                // V[p][q] for p, q in {0, 3} hold every input of the tile once (+-): an inf or NaN
                // among them leaves one of those four inf or NaN (inf - inf is NaN)
                if (q == 0 || q == 3) check[l] += (v0 + v3) * 0.0f;
            }
    }
    float total = 0.0f;
    for (int l = 0; l < kLanes; ++l) total += check[l];
    return total;
}

// ---------------------------------------------------------------- output transform
// One output channel of a batch of T tiles: m[xi * m_xi + t] is tile t's 4x4 product M, and
// y = A^T M A (+ bias, then max(., 0) when relu; NaN kept) goes to yt[(2 a + b) * ldy + t]
// (ldy >= T rounded up to kLanes), output (a, b) of the tile.
//   s0 = M0 + M1 + M2, s1 = M1 - M2 - M3 (over p), then the same over q.
void output_tiles(const float* m, int64_t m_xi, int T, float bias, bool relu, float* yt, int64_t ldy) {
    for (int t0 = 0; t0 < T; t0 += kLanes) {
        float y[4][kLanes];
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) {
            float s0[4], s1[4];
            for (int q = 0; q < 4; ++q) {
                const int64_t at = t0 + l + q * m_xi;
                const float m0 = m[at], m1 = m[at + 4 * m_xi], m2 = m[at + 8 * m_xi], m3 = m[at + 12 * m_xi];
                s0[q] = (m0 + m1) + m2;
                s1[q] = (m1 - m2) - m3;
            }
            y[0][l] = ((s0[0] + s0[1]) + s0[2]) + bias;
            y[1][l] = ((s0[1] - s0[2]) - s0[3]) + bias;
            y[2][l] = ((s1[0] + s1[1]) + s1[2]) + bias;
            y[3][l] = ((s1[1] - s1[2]) - s1[3]) + bias;
        }
        for (int k = 0; k < 4; ++k)
#pragma omp simd
            for (int l = 0; l < kLanes; ++l) yt[k * ldy + t0 + l] = relu && y[k][l] < 0.0f ? 0.0f : y[k][l];
    }
}

// `rows` tile rows of TW tiles (yt as output_tiles wrote them, from column t0) into an output
// plane: tile row i's outputs go to rows 2 i, 2 i + 1 of out (row stride ldo >= 2 TW), columns
// 2 tw, 2 tw + 1. Each row is stored in whole vector blocks (2 TWv floats) in increasing order, so
// what a block puts past the row's 2 TW columns is overwritten by the rows after it; the last
// row's spill needs 2 (TWv - TW) floats of room after it.
void place_tiles(const float* yt, int64_t ldy, int64_t t0, int rows, int TW, int TWv, float* out, int64_t ldo) {
    for (int i = 0; i < rows; ++i)
        for (int a = 0; a < 2; ++a) {
            const float* y0 = yt + 2 * a * ldy + t0 + static_cast<int64_t>(i) * TW;  // output (a, 0)
            const float* y1 = y0 + ldy;                                               // output (a, 1)
            float* o = out + (2 * static_cast<int64_t>(i) + a) * ldo;
            for (int c0 = 0; c0 < TWv; c0 += kLanes)
#pragma omp simd
                for (int l = 0; l < kLanes; ++l) {
                    o[2 * (c0 + l)] = y0[c0 + l];
                    o[2 * (c0 + l) + 1] = y1[c0 + l];
                }
        }
}

TileKernels make_tile_kernels() {
    TileKernels k;
    k.input_tiles = input_tiles;
    k.output_tiles = output_tiles;
    k.place_tiles = place_tiles;
    k.input_tiles4 = input_tiles4;
    k.output_tiles4 = output_tiles4;
    k.place_tiles4 = place_tiles4;
    return k;
}

}  // namespace
}  // namespace deepkern::cpu::wino
