// conv2d as im2col + GEMM, one image per OpenMP thread.
#include "cpu/conv2d.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/parallel.hpp"
#include "cpu/matmul.hpp"

namespace deepkern::cpu {
namespace {

// x is (C, H, W) of one image; cols is (C*KH*KW, OH*OW), zero where the window hits padding
void im2col(const Conv2dShape& s, const float* x, float* cols) {
    const int ohw = s.OH * s.OW;
    for (int c = 0; c < s.C; ++c)
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) {
                float* row = cols + (static_cast<int64_t>(c) * s.KH * s.KW + i * s.KW + j) * ohw;
                const float* xc = x + static_cast<int64_t>(c) * s.H * s.W;
                for (int oh = 0; oh < s.OH; ++oh) {
                    const int h = oh * s.SH - s.PH + i;
                    float* out = row + oh * s.OW;
                    if (h < 0 || h >= s.H) {
                        std::memset(out, 0, sizeof(float) * s.OW);
                        continue;
                    }
                    const float* xr = xc + static_cast<int64_t>(h) * s.W;
                    for (int ow = 0; ow < s.OW; ++ow) {
                        const int w = ow * s.SW - s.PW + j;
                        out[ow] = (w >= 0 && w < s.W) ? xr[w] : 0.0f;
                    }
                }
            }
}

// cols is (C*KH*KW, OH*OW); adds each column entry back onto x (C, H, W), which the caller zeroed
void col2im(const Conv2dShape& s, const float* cols, float* x) {
    const int ohw = s.OH * s.OW;
    for (int c = 0; c < s.C; ++c)
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) {
                const float* row = cols + (static_cast<int64_t>(c) * s.KH * s.KW + i * s.KW + j) * ohw;
                float* xc = x + static_cast<int64_t>(c) * s.H * s.W;
                for (int oh = 0; oh < s.OH; ++oh) {
                    const int h = oh * s.SH - s.PH + i;
                    if (h < 0 || h >= s.H) continue;
                    float* xr = xc + static_cast<int64_t>(h) * s.W;
                    const float* in = row + oh * s.OW;
                    for (int ow = 0; ow < s.OW; ++ow) {
                        const int w = ow * s.SW - s.PW + j;
                        if (w >= 0 && w < s.W) xr[w] += in[ow];
                    }
                }
            }
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
#pragma omp parallel
    {
        std::vector<float> cols(static_cast<size_t>(ckk) * ohw);
#pragma omp for schedule(static)
        for (int n = 0; n < s.N; ++n) {
            im2col(s, x + n * x_img, cols.data());
            float* yn = y + n * y_img;
            // y_n (OC, OHW) = W (OC, CKK) @ cols (CKK, OHW)
            sgemm(false, false, s.OC, ohw, ckk, w, ckk, cols.data(), ohw, 0.0f, yn, ohw, nullptr, false);
            if (bias)
                for (int o = 0; o < s.OC; ++o)
                    for (int p = 0; p < ohw; ++p) yn[static_cast<int64_t>(o) * ohw + p] += bias[o];
        }
    }
}

void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                     float* gx, float* gw, float* gb) {
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
    const size_t w_size = static_cast<size_t>(s.OC) * ckk;
    std::fill(gw, gw + w_size, 0.0f);
    if (gb) std::fill(gb, gb + s.OC, 0.0f);
#pragma omp parallel
    {
        std::vector<float> cols(static_cast<size_t>(ckk) * ohw);
        std::vector<float> gw_local(w_size, 0.0f);
        std::vector<float> gb_local(gb ? s.OC : 0, 0.0f);
#pragma omp for schedule(static)
        for (int n = 0; n < s.N; ++n) {
            const float* gyn = gy + n * y_img;
            im2col(s, x + n * x_img, cols.data());
            // gW (OC, CKK) += gy_n (OC, OHW) @ cols^T (OHW, CKK)
            sgemm(false, true, s.OC, ckk, ohw, gyn, ohw, cols.data(), ohw, 1.0f, gw_local.data(), ckk,
                  nullptr, false);
            // dcols (CKK, OHW) = W^T (CKK, OC) @ gy_n (OC, OHW), then scattered back onto gx_n
            sgemm(true, false, ckk, ohw, s.OC, w, ckk, gyn, ohw, 0.0f, cols.data(), ohw, nullptr, false);
            float* gxn = gx + n * x_img;
            std::fill(gxn, gxn + x_img, 0.0f);
            col2im(s, cols.data(), gxn);
            if (gb)
                for (int o = 0; o < s.OC; ++o) {
                    const float* row = gyn + static_cast<int64_t>(o) * ohw;
                    float acc = 0.0f;
                    for (int p = 0; p < ohw; ++p) acc += row[p];
                    gb_local[o] += acc;
                }
        }
#pragma omp critical
        {
            for (size_t i = 0; i < w_size; ++i) gw[i] += gw_local[i];
            if (gb)
                for (int o = 0; o < s.OC; ++o) gb[o] += gb_local[o];
        }
    }
}

}  // namespace deepkern::cpu
