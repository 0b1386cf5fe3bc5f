// max_pool2d / avg_pool2d: one (n, c) plane per iteration, planes split over threads.
// The CNN's case, 2x2 windows with stride 2 and no padding, has its own kernels: one pass
// over the input rows in pairs, vectorised over the output width, every output (and, in
// backward, every input gradient) written exactly once; with the AVX-512 SIMD variant the
// max forward/backward run pool_avx512.cpp's kernels. Other geometries take the general window
// loops. The fused ReLU + max-pool planes of the conv layers (conv2d_fused.cpp) live here too.
#include "cpu/pool.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/parallel.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {
namespace {

// The comparisons below may be evaluated speculatively once vectorised (see fast_exp.hpp). The
// region starts before beats(): GCC inlines only between functions with the same options.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

// NaN rule (as NumPy and PyTorch): NaN propagates, so a NaN counts as larger than any number;
// ties, between equal numbers or between NaNs, go to the first in row-major window order.
// True when v takes the place of best (the window's maximum so far).
inline bool beats(float v, float best) { return v > best || (v != v && best == best); }

// Index (h * W + w) of the first maximum of the window at (oh, ow) in plane x (H, W), or -1
// when the window lies entirely in padding (only when the plane is empty: H or W is 0).
inline int64_t window_argmax(const Pool2dShape& s, const float* x, int oh, int ow) {
    const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
    const int hs = std::max(h0, 0), he = std::min(h0 + s.KH, s.H);
    const int ws = std::max(w0, 0), we = std::min(w0 + s.KW, s.W);
    int64_t best = -1;
    float best_value = -std::numeric_limits<float>::infinity();
    for (int h = hs; h < he; ++h)
        for (int w = ws; w < we; ++w) {
            const float v = x[static_cast<int64_t>(h) * s.W + w];
            if (best < 0 || beats(v, best_value)) {
                best_value = v;
                best = static_cast<int64_t>(h) * s.W + w;
            }
        }
    return best;
}

// ------------------------------------------------------------------ 2x2, stride 2, padding 0

bool is_2x2_s2(const Pool2dShape& s) {
    return s.KH == 2 && s.KW == 2 && s.SH == 2 && s.SW == 2 && s.PH == 0 && s.PW == 0;
}

// x plane (H, W) -> y plane (OH, OW), OH = H / 2, OW = W / 2 (an odd last row/column is unused)
void max2x2_plane(const float* x, float* y, int W, int OH, int OW) {
    for (int oh = 0; oh < OH; ++oh) {
        const float* r0 = x + static_cast<int64_t>(2 * oh) * W;
        const float* r1 = r0 + W;
        float* yr = y + static_cast<int64_t>(oh) * OW;
#pragma omp simd
        for (int ow = 0; ow < OW; ++ow) {
            const float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            const float top = b > a ? b : a, bottom = d > c ? d : c;
            // the selects above drop a NaN; the NaN rule as one more select (two unordered
            // compares; the sum of a window holding a NaN is NaN), branch-free so it vectorises
            const bool nan = __builtin_isunordered(a, b) | __builtin_isunordered(c, d);
            yr[ow] = nan ? (a + b) + (c + d) : bottom > top ? bottom : top;
        }
    }
}

// gy plane (OH, OW), x plane (H, W) -> gx plane (H, W): each gradient goes to the first maximum
// of its window in row-major order (a, b / c, d), the other three get 0; a NaN is the maximum.
void max2x2_backward_plane(const float* gy, const float* x, float* gx, int H, int W, int OH, int OW) {
    for (int oh = 0; oh < OH; ++oh) {
        const float* r0 = x + static_cast<int64_t>(2 * oh) * W;
        const float* r1 = r0 + W;
        float* g0 = gx + static_cast<int64_t>(2 * oh) * W;
        float* g1 = g0 + W;
        const float* gr = gy + static_cast<int64_t>(oh) * OW;
#pragma omp simd
        for (int ow = 0; ow < OW; ++ow) {
            const float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            const float top = b > a ? b : a, bottom = d > c ? d : c;
            const float m = bottom > top ? bottom : top;  // the maximum of the numbers
            // the first of a, b, c, d that is the maximum takes g: selects, no branches. In a
            // window holding a NaN the NaNs are the maxima, in one without, those equal to m.
            const bool nan = __builtin_isunordered(a, b) | __builtin_isunordered(c, d);
            const bool ha = ((a == m) & !nan) | (a != a), hb = ((b == m) & !nan) | (b != b);
            const bool hc = ((c == m) & !nan) | (c != c);
            float rest = gr[ow];
            const float ga = ha ? rest : 0.0f;
            rest = ha ? 0.0f : rest;
            const float gb = hb ? rest : 0.0f;
            rest = hb ? 0.0f : rest;
            const float gc = hc ? rest : 0.0f;
            rest = hc ? 0.0f : rest;
            g0[2 * ow] = ga;
            g0[2 * ow + 1] = gb;
            g1[2 * ow] = gc;
            g1[2 * ow + 1] = rest;
        }
        if (W > 2 * OW) {  // odd width: the last column is in no window
            g0[W - 1] = 0.0f;
            g1[W - 1] = 0.0f;
        }
    }
    for (int64_t i = static_cast<int64_t>(2 * OH) * W; i < static_cast<int64_t>(H) * W; ++i) gx[i] = 0.0f;
}

void avg2x2_plane(const float* x, float* y, int W, int OH, int OW) {
    for (int oh = 0; oh < OH; ++oh) {
        const float* r0 = x + static_cast<int64_t>(2 * oh) * W;
        const float* r1 = r0 + W;
        float* yr = y + static_cast<int64_t>(oh) * OW;
#pragma omp simd
        for (int ow = 0; ow < OW; ++ow)
            yr[ow] = ((r0[2 * ow] + r0[2 * ow + 1]) + (r1[2 * ow] + r1[2 * ow + 1])) * 0.25f;
    }
}

void avg2x2_backward_plane(const float* gy, float* gx, int H, int W, int OH, int OW) {
    for (int oh = 0; oh < OH; ++oh) {
        float* g0 = gx + static_cast<int64_t>(2 * oh) * W;
        float* g1 = g0 + W;
        const float* gr = gy + static_cast<int64_t>(oh) * OW;
#pragma omp simd
        for (int ow = 0; ow < OW; ++ow) {
            const float share = gr[ow] * 0.25f;
            g0[2 * ow] = share;
            g0[2 * ow + 1] = share;
            g1[2 * ow] = share;
            g1[2 * ow + 1] = share;
        }
        if (W > 2 * OW) {
            g0[W - 1] = 0.0f;
            g1[W - 1] = 0.0f;
        }
    }
    for (int64_t i = static_cast<int64_t>(2 * OH) * W; i < static_cast<int64_t>(H) * W; ++i) gx[i] = 0.0f;
}

// The fused ReLU + max-pool (pool.hpp): x plane with row stride ld -> y (PH, PW), route (PH, PW)
void max2x2_relu_plane_generic(const float* x, int64_t ld, float* y, uint8_t* route, int PH, int PW) {
    for (int ph = 0; ph < PH; ++ph) {
        const float* r0 = x + 2 * ph * ld;
        const float* r1 = r0 + ld;
        float* yr = y + static_cast<int64_t>(ph) * PW;
        uint8_t* rr = route + static_cast<int64_t>(ph) * PW;
        for (int pw = 0; pw < PW; ++pw) {
            const float v[4] = {r0[2 * pw], r0[2 * pw + 1], r1[2 * pw], r1[2 * pw + 1]};
            float best = v[0];
            uint8_t at = 0;
            for (uint8_t k = 1; k < 4; ++k)
                if (beats(v[k], best)) {
                    best = v[k];
                    at = k;
                }
            yr[pw] = best < 0.0f ? 0.0f : best;  // relu keeps a NaN
            rr[pw] = best > 0.0f ? at : kNoRoute;
        }
    }
}

// gy (PH, PW) and route -> g plane (H, W), row stride ld
void max2x2_route_backward_plane_generic(const float* gy, const uint8_t* route, float* g, int64_t ld, int H, int W,
                                         int PH, int PW) {
    for (int ph = 0; ph < PH; ++ph) {
        float* g0 = g + 2 * ph * ld;
        float* g1 = g0 + ld;
        const float* gr = gy + static_cast<int64_t>(ph) * PW;
        const uint8_t* rr = route + static_cast<int64_t>(ph) * PW;
#pragma omp simd
        for (int pw = 0; pw < PW; ++pw) {
            const float v = gr[pw];
            const int r = rr[pw];
            g0[2 * pw] = r == 0 ? v : 0.0f;
            g0[2 * pw + 1] = r == 1 ? v : 0.0f;
            g1[2 * pw] = r == 2 ? v : 0.0f;
            g1[2 * pw + 1] = r == 3 ? v : 0.0f;
        }
        for (int w = 2 * PW; w < W; ++w) g0[w] = g1[w] = 0.0f;  // odd width: the last column
    }
    for (int h = 2 * PH; h < H; ++h) std::fill(g + h * ld, g + h * ld + W, 0.0f);  // odd height: the last row
}

#pragma GCC pop_options

// 1 / (KH * KW), the average's divisor (padded zeros count); the product in double, as an int
// it overflows for windows past 46341 x 46341
float window_scale(const Pool2dShape& s) { return static_cast<float>(1.0 / (static_cast<double>(s.KH) * s.KW)); }

bool avx512() { return simd_isa() == SimdIsa::avx512; }

}  // namespace

void max2x2_relu_plane(const float* x, int64_t ld, float* y, uint8_t* route, int PH, int PW) {
    if (avx512())
        pool_isa::max2x2_relu_plane_avx512(x, ld, y, route, PH, PW);
    else
        max2x2_relu_plane_generic(x, ld, y, route, PH, PW);
}

void max2x2_route_backward_plane(const float* gy, const uint8_t* route, float* g, int64_t ld, int H, int W,
                                 int PH, int PW) {
    if (avx512())
        pool_isa::max2x2_route_backward_plane_avx512(gy, route, g, ld, H, W, PH, PW);
    else
        max2x2_route_backward_plane_generic(gy, route, g, ld, H, W, PH, PW);
}

int max2x2_route_nonzeros(const float* gy, const uint8_t* route, const int32_t* base, int n, int OW, int32_t* pixel,
                          float* value) {
    if (avx512()) return pool_isa::max2x2_route_nonzeros_avx512(gy, route, base, n, OW, pixel, value);
    int count = 0;
    for (int k = 0; k < n; ++k) {  // no branch per entry: the routes are random
        pixel[count] = base[k] + (route[k] >> 1) * OW + (route[k] & 1);
        value[count] = gy[k];
        count += route[k] != kNoRoute && gy[k] != 0.0f;
    }
    return count;
}

void max2x2_window_bases(int OW, int PH, int PW, int32_t* base) {
    for (int ph = 0; ph < PH; ++ph)
        for (int pw = 0; pw < PW; ++pw) base[ph * PW + pw] = 2 * ph * OW + 2 * pw;
}

// x is (N, C, H, W), y is (N, C, OH, OW)
void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    if (is_2x2_s2(s)) {
        const auto plane_fn = avx512() ? pool_isa::max2x2_plane_avx512 : max2x2_plane;
        parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p) plane_fn(x + p * hw, y + p * ohw, s.W, s.OH, s.OW);
        });
        return;
    }
    parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* xp = x + p * hw;
            float* yp = y + p * ohw;
            for (int oh = 0; oh < s.OH; ++oh)
                for (int ow = 0; ow < s.OW; ++ow) {
                        const int64_t at = window_argmax(s, xp, oh, ow);  // -1: all padding, which is -inf
                        yp[static_cast<int64_t>(oh) * s.OW + ow] =
                            at < 0 ? -std::numeric_limits<float>::infinity() : xp[at];
                    }
        }
    });
}

// gy is (N, C, OH, OW); gx (N, C, H, W) receives each gradient at its window's first maximum
void max_pool2d_backward(const Pool2dShape& s, const float* gy, const float* x, float* gx) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    if (is_2x2_s2(s)) {
        const auto plane_fn = avx512() ? pool_isa::max2x2_backward_plane_avx512 : max2x2_backward_plane;
        parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p) plane_fn(gy + p * ohw, x + p * hw, gx + p * hw, s.H, s.W, s.OH, s.OW);
        });
        return;
    }
    parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* xp = x + p * hw;
            const float* gp = gy + p * ohw;
            float* gxp = gx + p * hw;
            std::fill(gxp, gxp + hw, 0.0f);
            for (int oh = 0; oh < s.OH; ++oh)
                for (int ow = 0; ow < s.OW; ++ow) {
                        const int64_t at = window_argmax(s, xp, oh, ow);  // -1: all padding, credits nothing
                        if (at >= 0) gxp[at] += gp[static_cast<int64_t>(oh) * s.OW + ow];
                    }
        }
    });
}

void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    const float inv = window_scale(s);
    if (is_2x2_s2(s)) {
        parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p) avg2x2_plane(x + p * hw, y + p * ohw, s.W, s.OH, s.OW);
        });
        return;
    }
    parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* xp = x + p * hw;
            float* yp = y + p * ohw;
            for (int oh = 0; oh < s.OH; ++oh)
                for (int ow = 0; ow < s.OW; ++ow) {
                    const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
                    float acc = 0.0f;
                    for (int h = std::max(h0, 0); h < std::min(h0 + s.KH, s.H); ++h)
                        for (int w = std::max(w0, 0); w < std::min(w0 + s.KW, s.W); ++w)
                            acc += xp[static_cast<int64_t>(h) * s.W + w];
                    yp[static_cast<int64_t>(oh) * s.OW + ow] = acc * inv;
                }
        }
    });
}

void avg_pool2d_backward(const Pool2dShape& s, const float* gy, float* gx) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    const float inv = window_scale(s);
    if (is_2x2_s2(s)) {
        parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p) avg2x2_backward_plane(gy + p * ohw, gx + p * hw, s.H, s.W, s.OH, s.OW);
        });
        return;
    }
    parallel_ranges(planes, planes * hw, 1, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const float* gp = gy + p * ohw;
            float* gxp = gx + p * hw;
            std::fill(gxp, gxp + hw, 0.0f);
            for (int oh = 0; oh < s.OH; ++oh)
                for (int ow = 0; ow < s.OW; ++ow) {
                    const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
                    const float share = gp[static_cast<int64_t>(oh) * s.OW + ow] * inv;
                    for (int h = std::max(h0, 0); h < std::min(h0 + s.KH, s.H); ++h)
                        for (int w = std::max(w0, 0); w < std::min(w0 + s.KW, s.W); ++w)
                            gxp[static_cast<int64_t>(h) * s.W + w] += share;
                }
        }
    });
}

}  // namespace deepkern::cpu
