// Drivers of the direct few-tap conv kernels (conv2d_small.hpp). The forward splits each image's
// zero-padded columns by parity and runs its pooled rows through the AVX-512 kernel; the weight
// gradient runs chunks of images, each into its own lane sums, added in chunk order at the end.
#include "cpu/conv2d_small.hpp"

#include <algorithm>
#include <memory>
#include <vector>

#include "common/parallel.hpp"
#include "cpu/matmul.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {
namespace {

constexpr int kMaxTaps = 32;  // beyond this the GEMM form is efficient (its K fills the pipeline)
constexpr int kLanes = 16;
// The routed weight gradient up to this many taps (one pass of the kernel's tap block): with more,
// every pass rebuilds the gradients from the routes, and the dense kernel on the built conv output
// gradient is faster (150x150 network's 3 -> 32 layer, 27 taps, 1 thread: 19.8 vs 17.1 ms; the seed
// CNN's 1 -> 32, 9 taps: 0.97 vs 1.17 ms)
constexpr int kRoutedMostTaps = 9;  // = kTapBlock of conv2d_small_avx512.cpp (its row-pair order)

// The parity planes of one image's padded columns that the kernel reads
struct PlaneGeometry {
    int64_t rows, U;
    int64_t floats(const Conv2dShape& s) const { return 2 * static_cast<int64_t>(s.C) * rows * U; }
};

PlaneGeometry plane_geometry(const Conv2dShape& s) {
    const int PW = s.OW / 2;
    // rows: those the pooled rows read; U: the last step's 16 windows plus the taps' reach (KW / 2)
    return {2 * static_cast<int64_t>(s.OH / 2) + s.KH - 1, (PW + kLanes - 1) / kLanes * kLanes + s.KW / 2 + 1};
}

// planes (2, C, rows, U): [q, c, h, u] = padded image [c, h, 2u + q], 0 in the padding and past the image
void split_columns(const Conv2dShape& s, const PlaneGeometry& g, const float* x, float* planes) {
    std::fill(planes, planes + g.floats(s), 0.0f);
    const int64_t plane = g.rows * g.U;
    for (int c = 0; c < s.C; ++c)
        for (int64_t h = 0; h < g.rows; ++h) {
            const int64_t src_h = h - s.PH;
            if (src_h < 0 || src_h >= s.H) continue;
            const float* row = x + (static_cast<int64_t>(c) * s.H + src_h) * s.W;
            for (int wc = 0; wc < s.W; ++wc) {
                const int64_t col = wc + s.PW, u = col >> 1;
                if (u >= g.U) break;
                planes[((col & 1) * s.C + c) * plane + h * g.U + u] = row[wc];
            }
        }
}

// (C*KH*KW, 4): conv tap (c, i, j) of window tap (dy, dx) reads row dy + i, column
// 2 pw + dx + j of channel c: element pw + (dx + j) / 2 of the plane of parity (dx + j) % 2
std::vector<int64_t> tap_offsets(const Conv2dShape& s, const PlaneGeometry& g) {
    std::vector<int64_t> off;
    const int64_t plane = g.rows * g.U;
    for (int c = 0; c < s.C; ++c)
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j)
                for (int dy = 0; dy < 2; ++dy)
                    for (int dx = 0; dx < 2; ++dx) {
                        const int col = dx + j;
                        off.push_back(((col & 1) * s.C + c) * plane + (dy + i) * g.U + (col >> 1));
                    }
    return off;
}

}  // namespace

bool conv2d_small_weight_grad_applies(const Conv2dShape& s) {
    const int64_t taps = static_cast<int64_t>(s.C) * s.KH * s.KW;
    return s.SH == 1 && s.SW == 1 && taps > 0 && taps <= kMaxTaps && s.OH > 0 && s.OW > 0 && s.N > 0 && s.OC > 0 &&
           simd_isa() == SimdIsa::avx512;
}

void conv2d_small_weight_grad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                              float* gw, float* gb) {
    const int taps = s.C * s.KH * s.KW;
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW, x_img = static_cast<int64_t>(s.C) * s.H * s.W;
    const bool padded = s.PH > 0 || s.PW > 0;
    const int64_t Hp = s.H + 2 * s.PH, Wp = s.W + 2 * s.PW;
    std::vector<int64_t> offsets;
    for (int c = 0; c < s.C; ++c)
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) offsets.push_back((c * Hp + i) * Wp + j);
    // Behind a 2x2 max-pool: the pooled gradient and routes read directly (conv2d_small.hpp), while x is finite
    const ConvGradSource::Pooled pooled = source ? source->pooled() : ConvGradSource::Pooled{nullptr, nullptr};
    const bool routed = pooled.gy && taps <= kRoutedMostTaps && conv2d_parts::all_finite(x, s.N * x_img);
    const int64_t pooled_img = static_cast<int64_t>(s.OC) * (s.OH / 2) * (s.OW / 2);
    // Chunks of consecutive images, a count that depends on N only, each with its own lane sums
    constexpr int64_t kMostChunks = 16;
    const int64_t chunks = std::min<int64_t>(s.N, kMostChunks);
    const int64_t lanes_per_chunk = static_cast<int64_t>(s.OC) * taps * kLanes, bias_per_chunk = s.OC * kLanes;
    std::vector<float> lanes(chunks * lanes_per_chunk, 0.0f), bias_lanes(gb ? chunks * bias_per_chunk : 0, 0.0f);
    parallel_chunks(chunks, [&](int64_t k) {
        std::vector<float> xp(padded ? s.C * Hp * Wp : 0, 0.0f), gy_image(source && !routed ? s.OC * ohw : 0);
        for (int64_t n = s.N * k / chunks; n < s.N * (k + 1) / chunks; ++n) {
            const float* xn = x + n * x_img;
            if (padded) {  // the image inside a zero border (the border stays 0)
                for (int c = 0; c < s.C; ++c)
                    for (int h = 0; h < s.H; ++h)
                        std::copy_n(xn + (static_cast<int64_t>(c) * s.H + h) * s.W, s.W,
                                    xp.data() + (c * Hp + h + s.PH) * Wp + s.PW);
                xn = xp.data();
            }
            const float* gyn = gy ? gy + n * s.OC * ohw : routed ? pooled.gy + n * pooled_img : gy_image.data();
            const uint8_t* route = routed ? pooled.route + n * pooled_img : nullptr;
            if (source && !routed) source->images(static_cast<int>(n), 1, gy_image.data(), ohw);
            conv2d_isa::small_weight_grad_image_avx512({taps, s.OC, s.OH, s.OW, offsets.data(), gyn, route, xn, Wp,
                                                        lanes.data() + k * lanes_per_chunk,
                                                        gb ? bias_lanes.data() + k * bias_per_chunk : nullptr});
        }
    });
    // each chunk's 16 lanes summed in order, then the chunks in order
    auto total = [&](const std::vector<float>& v, int64_t per_chunk, int64_t at) {
        float sum = 0.0f;
        for (int64_t k = 0; k < chunks; ++k) {
            float part = 0.0f;
            for (int l = 0; l < kLanes; ++l) part += v[k * per_chunk + at * kLanes + l];
            sum = k == 0 ? part : sum + part;
        }
        return sum;
    };
    for (int64_t e = 0; e < static_cast<int64_t>(s.OC) * taps; ++e) gw[e] = total(lanes, lanes_per_chunk, e);
    if (gb)
        for (int o = 0; o < s.OC; ++o) gb[o] = total(bias_lanes, bias_per_chunk, o);
}

bool conv2d_small_relu_pool_applies(const Conv2dShape& s) {
    const int64_t taps = static_cast<int64_t>(s.C) * s.KH * s.KW;
    return s.SH == 1 && s.SW == 1 && taps > 0 && taps <= kMaxTaps && s.OH >= 2 && s.OW >= 2 && s.N > 0 &&
           s.OC > 0 && simd_isa() == SimdIsa::avx512 && gemm_variant() == "avx512";
}

void conv2d_small_relu_pool(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y,
                            uint8_t* route) {
    const PlaneGeometry g = plane_geometry(s);
    const std::vector<int64_t> offsets = tap_offsets(s, g);
    const int PH = s.OH / 2, PW = s.OW / 2;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * PH * PW;
    auto args = [&](int64_t n, const float* planes) {
        return conv2d_isa::SmallConvRows{s.C, s.KH, s.KW, s.OC, PH, PW, planes, g.rows, g.U, offsets.data(), w, bias,
                                         y + n * y_img, route + n * y_img};
    };
    const auto scratch = [&] { return std::unique_ptr<float[]>(new float[static_cast<size_t>(g.floats(s))]); };
    if (s.N >= max_threads() || !can_parallel()) {  // whole images per thread
        parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
            auto planes = scratch();
            for (int64_t n = n0; n < n1; ++n) {
                split_columns(s, g, x + n * x_img, planes.get());
                conv2d_isa::small_relu_pool_rows_avx512(args(n, planes.get()), 0, PH);
            }
        });
        return;
    }
    auto planes = scratch();  // fewer images than threads: each image's rows shared out
    for (int64_t n = 0; n < s.N; ++n) {
        split_columns(s, g, x + n * x_img, planes.get());
        parallel_for(0, PH, 1, [&](int64_t p0, int64_t p1) {
            conv2d_isa::small_relu_pool_rows_avx512(args(n, planes.get()), static_cast<int>(p0), static_cast<int>(p1));
        });
    }
}

}  // namespace deepkern::cpu
