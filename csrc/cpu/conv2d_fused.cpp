// The fused conv layers (conv2d_fused.hpp) on conv2d.cpp's hooks.
//
// A conv + ReLU + 2x2 max-pool layer done op by op moves its un-pooled output (N, OC, OH, OW)
// through memory five times: the conv writes it, the pool reads it, and in training the pool's
// backward reads it again and writes its gradient, which the conv backward reads. Here the
// forward pools each image's output block while it is still in cache (the conv output sink),
// keeping a one-byte route per pooled output, and the backward rebuilds each group's conv
// output gradient from those routes inside the conv backward's own scratch (the gradient
// source), so the un-pooled tensor never exists in memory. Without the pool, the ReLU runs in
// the GEMM's store and its mask is applied while the gradient is gathered.
#include "cpu/conv2d_fused.hpp"

#include "cpu/activation.hpp"
#include "cpu/conv2d_bf16.hpp"
#include "cpu/conv2d_small.hpp"
#include "cpu/conv2d_winograd.hpp"
#include "cpu/gemm_bf16.hpp"
#include "cpu/pool.hpp"

namespace deepkern::cpu {
namespace {

// Each image's conv output (OC, OH, OW) -> y (OC, PH, PW) and route, image n's planes at n * OC * PH * PW
class PoolSink final : public ConvOutputSink {
public:
    PoolSink(const Conv2dShape& s, float* y, uint8_t* route) : s_(s), y_(y), route_(route) {}

    void image(int n, const float* block, int64_t channel_stride, int64_t row_stride) const override {
        const int PH = s_.OH / 2, PW = s_.OW / 2;
        const int64_t plane = static_cast<int64_t>(PH) * PW;
        for (int o = 0; o < s_.OC; ++o) {
            const int64_t at = (static_cast<int64_t>(n) * s_.OC + o) * plane;
            max2x2_relu_plane(block + o * channel_stride, row_stride, y_ + at, route_ + at, PH, PW);
        }
    }

    bool reads_even_part() const override { return true; }  // the pool's windows end at 2 * (OH / 2)

private:
    const Conv2dShape& s_;
    float* y_;
    uint8_t* route_;
};

// The conv output gradient of a group of images from the pooled gradient gy (N, OC, PH, PW) and route
class RouteSource final : public ConvGradSource {
public:
    RouteSource(const Conv2dShape& s, const float* gy, const uint8_t* route) : s_(s), gy_(gy), route_(route) {}

    void images(int n0, int G, float* dst, int64_t ld) const override {
        const int PH = s_.OH / 2, PW = s_.OW / 2;
        const int64_t plane = static_cast<int64_t>(PH) * PW, ohw = static_cast<int64_t>(s_.OH) * s_.OW;
        for (int g = 0; g < G; ++g)
            for (int o = 0; o < s_.OC; ++o) {
                const int64_t at = (static_cast<int64_t>(n0 + g) * s_.OC + o) * plane;
                max2x2_route_backward_plane(gy_ + at, route_ + at, dst + o * ld + g * ohw, s_.OW, s_.OH, s_.OW,
                                            PH, PW);
            }
    }

    Pooled pooled() const override { return {gy_, route_}; }

private:
    const Conv2dShape& s_;
    const float* gy_;
    const uint8_t* route_;
};

// The conv output gradient of a group of images: gy (N, OC, OH, OW) where y > 0, else 0
class ReluMaskSource final : public ConvGradSource {
public:
    ReluMaskSource(const Conv2dShape& s, const float* gy, const float* y) : s_(s), gy_(gy), y_(y) {}

    void images(int n0, int G, float* dst, int64_t ld) const override {
        const int64_t ohw = static_cast<int64_t>(s_.OH) * s_.OW;
        for (int g = 0; g < G; ++g)
            for (int o = 0; o < s_.OC; ++o) {
                const int64_t at = (static_cast<int64_t>(n0 + g) * s_.OC + o) * ohw;
                relu_backward(gy_ + at, y_ + at, dst + o * ld + g * ohw, ohw);
            }
    }

private:
    const Conv2dShape& s_;
    const float* gy_;
    const float* y_;
};

}  // namespace

void conv2d_relu_forward(const Conv2dShape& s, bool pool, const float* x, const float* w, const float* bias,
                         float* y, uint8_t* route, bool bf16) {
    if (bf16 && conv2d_bf16_forward_runs_fp32(s)) {  // few taps: fp32's kernels (conv2d_bf16.hpp)
        require_bf16();  // still refused where bf16 is not available, as every bf16 entry point
        bf16 = false;
    }
    if (!pool) {
        if (bf16)
            conv2d_forward_relu_bf16(s, x, w, bias, y);
        else
            conv2d_forward_relu(s, x, w, bias, y);
        return;
    }
    // few taps: computed directly, in registers; unless DEEPKERN_WINOGRAD picks Winograd for the
    // layer (mode on), which conv2d then runs too: the fused layer keeps the unfused ops' bits
    if (!bf16 && conv2d_small_relu_pool_applies(s) && !winograd_forward_wanted(s)) {
        conv2d_small_relu_pool(s, x, w, bias, y, route);
        return;
    }
    const PoolSink sink(s, y, route);
    if (bf16)
        conv2d_forward_bf16(s, x, w, bias, sink);
    else
        conv2d_forward(s, x, w, bias, sink);
}

void conv2d_relu_backward(const Conv2dShape& s, bool pool, const float* gy, const float* y, const uint8_t* route,
                          const float* x, const float* w, float* gx, float* gw, float* gb, bool bf16) {
    auto run = [&](const ConvGradSource& source) {
        if (bf16)
            conv2d_backward_bf16(s, source, x, w, gx, gw, gb);
        else
            conv2d_backward(s, source, x, w, gx, gw, gb);
    };
    if (pool)
        run(RouteSource(s, gy, route));
    else
        run(ReluMaskSource(s, gy, y));
}

}  // namespace deepkern::cpu
