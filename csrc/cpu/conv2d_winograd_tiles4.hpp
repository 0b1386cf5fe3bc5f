// The Winograd F(4x4, 3x3) tile transforms: a 4x4 block of outputs from a 6x6 input tile
// (Lavin & Gray's points 0, +-1, +-2), 36 products instead of 144. Same rules as
// conv2d_winograd_tiles.hpp, which includes this file (internal linkage, no std:: templates,
// whole vector blocks of tiles). These transforms multiply by 2, 4, 5 and 8: contraction into FMAs
// is switched off so that every ISA rounds them alike (x * 5 is not exact), giving the same bits.
#pragma once
#include <cstdint>

#include "cpu/conv2d_winograd.hpp"

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

namespace deepkern::cpu::wino {
namespace {

// band (in_rows, wp) = the plane x (H, W) rows [row0, row0 + in_rows) inside a zero border: band[i, j] =
// x[row0 + i, j - PW], 0 outside x (both tile sizes' input transforms read their band of rows from it)
inline void copy_band(const float* x, int H, int W, int PW, int row0, int in_rows, int wp, float* band) {
    for (int i = 0; i < in_rows; ++i) {
        const int h = row0 + i;
        float* dst = band + static_cast<int64_t>(i) * wp;
#pragma omp simd
        for (int j = 0; j < wp; ++j) dst[j] = 0.0f;
        if (h < 0 || h >= H) continue;
        const float* xr = x + static_cast<int64_t>(h) * W;
        const int n = W < wp - PW ? W : wp - PW;
#pragma omp simd
        for (int j = 0; j < n; ++j) dst[PW + j] = xr[j];
    }
}

// Row stride of the padded band input_tiles4 copies the input rows into
inline int padded_width4(int TWv) { return 4 * (TWv + kLanes); }

// Floats of work space input_tiles4 needs for `rows` tile rows
inline int64_t input_work4(int rows, int TW, int TWv) {
    const int64_t classes = 24 * ((static_cast<int64_t>(rows) + 1) * TW + kLanes);  // 4 row classes x 6
    return classes + (4 * static_cast<int64_t>(rows) + 2) * padded_width4(TWv);     // + the band
}

// B^T of F(4x4, 3x3) applied to d0..d5
struct BT6 {
    float r[6];
    BT6(float d0, float d1, float d2, float d3, float d4, float d5) {
        r[0] = (d0 * 4.0f - d2 * 5.0f) + d4;
        r[1] = (d3 + d4) - (d1 + d2) * 4.0f;
        r[2] = (d4 - d3) + (d1 - d2) * 4.0f;
        r[3] = (d4 - d2) + (d3 - d1) * 2.0f;
        r[4] = (d4 - d2) - (d3 - d1) * 2.0f;
        r[5] = (d1 * 4.0f - d3 * 5.0f) + d5;
    }
};

// input_tiles for F(4x4, 3x3): tile (th, tw) reads rows 4 th - PH .. + 5 and columns 4 tw - PW ..
// + 5; V = B^T d B goes to v[xi * v_xi + (th - th0) * TW + tw], xi = 6 p + q (36 of them).
// work: input_work4(th1 - th0, TW, TWv). Input row 4 i + k (k < 4) of the band goes, after the
// row direction, to class k at tile row i, so tile row i's six rows are classes 0..3 at i and
// classes 0, 1 at i + 1: the column direction runs over all tiles of the band in whole vectors.
float input_tiles4(const float* x, int H, int W, int PH, int PW, int th0, int th1, int TW, int TWv, float* v,
                   int64_t v_xi, float* work) {
    const int rows = th1 - th0, row0 = 4 * th0 - PH;
    const int64_t half = (static_cast<int64_t>(rows) + 1) * TW + kLanes;  // one q of one class
    const int wp = padded_width4(TWv), in_rows = 4 * rows + 2;
    float* cls = work;               // (4 classes, 6, half)
    float* band = cls + 24 * half;   // (in_rows, wp): band[i, j] = x[row0 + i, j - PW]
    float check[kLanes] = {};
    copy_band(x, H, W, PW, row0, in_rows, wp, band);
    for (int i = 0; i < in_rows; ++i) {
        const float* src = band + static_cast<int64_t>(i) * wp;
        float* r = cls + (i % 4) * 6 * half + (i / 4) * static_cast<int64_t>(TW);
        for (int t0 = 0; t0 < TWv; t0 += kLanes)
#pragma omp simd
            for (int l = 0; l < kLanes; ++l) {
                const int t = t0 + l;
                const BT6 b(src[4 * t], src[4 * t + 1], src[4 * t + 2], src[4 * t + 3], src[4 * t + 4], src[4 * t + 5]);
                for (int q = 0; q < 6; ++q) r[q * half + t] = b.r[q];
            }
    }
    const int n = rows * TW;
    for (int q = 0; q < 6; ++q) {
        const float* c0 = cls + q * half;  // class k at c0 + k * 6 * half
        const int64_t cs = 6 * half;
        for (int t0 = 0; t0 < n; t0 += kLanes)
#pragma omp simd
            for (int l = 0; l < kLanes; ++l) {
                const int t = t0 + l;
                const BT6 b(c0[t], c0[cs + t], c0[2 * cs + t], c0[3 * cs + t], c0[t + TW], c0[cs + t + TW]);
                for (int p = 0; p < 6; ++p) v[(6 * p + q) * v_xi + t] = b.r[p];
                // rows / columns 0 and 5 of V hold every input of the tile (see input_tiles)
                if (q == 0 || q == 5) check[l] += (b.r[0] + b.r[5]) * 0.0f;
            }
    }
    float total = 0.0f;
    for (int l = 0; l < kLanes; ++l) total += check[l];
    return total;
}

// A^T of F(4x4, 3x3) applied to m0..m5
struct AT6 {
    float y[4];
    AT6(float m0, float m1, float m2, float m3, float m4, float m5) {
        const float p12 = m1 + m2, m12 = m1 - m2, p34 = m3 + m4, m34 = m3 - m4;
        y[0] = (m0 + p12) + p34;
        y[1] = m12 + m34 * 2.0f;
        y[2] = p12 + p34 * 4.0f;
        y[3] = (m12 + m34 * 8.0f) + m5;
    }
};

// output_tiles for F(4x4, 3x3): y = A^T M A (+ bias, ReLU) of tile t to yt[(4 a + b) * ldy + t]
void output_tiles4(const float* m, int64_t m_xi, int T, float bias, bool relu, float* yt, int64_t ldy) {
    for (int t0 = 0; t0 < T; t0 += kLanes) {
        float y[16][kLanes];
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) {
            float s[4][6];  // A^T over p, for each q
            for (int q = 0; q < 6; ++q) {
                const float* at = m + t0 + l + q * m_xi;
                const AT6 c(at[0], at[6 * m_xi], at[12 * m_xi], at[18 * m_xi], at[24 * m_xi], at[30 * m_xi]);
                for (int a = 0; a < 4; ++a) s[a][q] = c.y[a];
            }
            for (int a = 0; a < 4; ++a) {
                const AT6 r(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5]);
                for (int b = 0; b < 4; ++b) y[4 * a + b][l] = r.y[b] + bias;
            }
        }
        for (int k = 0; k < 16; ++k)
#pragma omp simd
            for (int l = 0; l < kLanes; ++l) yt[k * ldy + t0 + l] = relu && y[k][l] < 0.0f ? 0.0f : y[k][l];
    }
}

// place_tiles for 4x4 outputs: tile row i's outputs to rows 4 i .. 4 i + 3 of out (row stride
// ldo >= 4 TW), columns 4 tw .. 4 tw + 3; rows in whole vector blocks in increasing order, the
// last one spilling 4 (TWv - TW) floats
void place_tiles4(const float* yt, int64_t ldy, int64_t t0, int rows, int TW, int TWv, float* out, int64_t ldo) {
    for (int i = 0; i < rows; ++i)
        for (int a = 0; a < 4; ++a) {
            const float* y = yt + 4 * a * ldy + t0 + static_cast<int64_t>(i) * TW;  // output (a, 0)
            float* o = out + (4 * static_cast<int64_t>(i) + a) * ldo;
            for (int c0 = 0; c0 < TWv; c0 += kLanes)
#pragma omp simd
                for (int l = 0; l < kLanes; ++l)
                    for (int b = 0; b < 4; ++b) o[4 * (c0 + l) + b] = y[b * ldy + c0 + l];
        }
}

}  // namespace
}  // namespace deepkern::cpu::wino

#pragma GCC pop_options
