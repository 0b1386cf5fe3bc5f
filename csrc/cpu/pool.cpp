// max_pool2d / avg_pool2d: one (n, c) plane per iteration, planes split over threads.
#include "cpu/pool.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/parallel.hpp"

namespace deepkern::cpu {
namespace {

// Index (h * W + w) of the first maximum of the window at (oh, ow) in plane x (H, W), or -1
// when the window lies entirely in padding (impossible when padding <= kernel / 2).
inline int64_t window_argmax(const Pool2dShape& s, const float* x, int oh, int ow) {
    const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
    const int hs = std::max(h0, 0), he = std::min(h0 + s.KH, s.H);
    const int ws = std::max(w0, 0), we = std::min(w0 + s.KW, s.W);
    int64_t best = -1;
    float best_value = -std::numeric_limits<float>::infinity();
    for (int h = hs; h < he; ++h)
        for (int w = ws; w < we; ++w) {
            const float v = x[static_cast<int64_t>(h) * s.W + w];
            if (v > best_value || best < 0) {
                best_value = v;
                best = static_cast<int64_t>(h) * s.W + w;
            }
        }
    return best;
}

}  // namespace

// x is (N, C, H, W), y is (N, C, OH, OW)
void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
#pragma omp parallel for schedule(static) if (worth_parallel(planes * hw))
    for (int64_t p = 0; p < planes; ++p) {
        const float* xp = x + p * hw;
        float* yp = y + p * ohw;
        for (int oh = 0; oh < s.OH; ++oh)
            for (int ow = 0; ow < s.OW; ++ow) yp[oh * s.OW + ow] = xp[window_argmax(s, xp, oh, ow)];
    }
}

// gy is (N, C, OH, OW); gx (N, C, H, W) receives each gradient at its window's first maximum
void max_pool2d_backward(const Pool2dShape& s, const float* gy, const float* x, float* gx) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
#pragma omp parallel for schedule(static) if (worth_parallel(planes * hw))
    for (int64_t p = 0; p < planes; ++p) {
        const float* xp = x + p * hw;
        const float* gp = gy + p * ohw;
        float* gxp = gx + p * hw;
        std::fill(gxp, gxp + hw, 0.0f);
        for (int oh = 0; oh < s.OH; ++oh)
            for (int ow = 0; ow < s.OW; ++ow) gxp[window_argmax(s, xp, oh, ow)] += gp[oh * s.OW + ow];
    }
}

void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    const float inv = 1.0f / static_cast<float>(s.KH * s.KW);  // padded zeros count
#pragma omp parallel for schedule(static) if (worth_parallel(planes * hw))
    for (int64_t p = 0; p < planes; ++p) {
        const float* xp = x + p * hw;
        float* yp = y + p * ohw;
        for (int oh = 0; oh < s.OH; ++oh)
            for (int ow = 0; ow < s.OW; ++ow) {
                const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
                float acc = 0.0f;
                for (int h = std::max(h0, 0); h < std::min(h0 + s.KH, s.H); ++h)
                    for (int w = std::max(w0, 0); w < std::min(w0 + s.KW, s.W); ++w)
                        acc += xp[static_cast<int64_t>(h) * s.W + w];
                yp[oh * s.OW + ow] = acc * inv;
            }
    }
}

void avg_pool2d_backward(const Pool2dShape& s, const float* gy, float* gx) {
    const int64_t planes = static_cast<int64_t>(s.N) * s.C, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    const float inv = 1.0f / static_cast<float>(s.KH * s.KW);
#pragma omp parallel for schedule(static) if (worth_parallel(planes * hw))
    for (int64_t p = 0; p < planes; ++p) {
        const float* gp = gy + p * ohw;
        float* gxp = gx + p * hw;
        std::fill(gxp, gxp + hw, 0.0f);
        for (int oh = 0; oh < s.OH; ++oh)
            for (int ow = 0; ow < s.OW; ++ow) {
                const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
                const float share = gp[oh * s.OW + ow] * inv;
                for (int h = std::max(h0, 0); h < std::min(h0 + s.KH, s.H); ++h)
                    for (int w = std::max(w0, 0); w < std::min(w0 + s.KW, s.W); ++w)
                        gxp[static_cast<int64_t>(h) * s.W + w] += share;
            }
    }
}

}  // namespace deepkern::cpu
