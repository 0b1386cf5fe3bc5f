// The weight gradient from the non-zero output gradients (conv2d_sparse_wgrad.hpp): the driver
// and the generic build of its kernel.
//
// Work: a first pass counts the non-zero gradients (the route source lists them from its routes
// without building the dense gradient); with more than a third not zero the call declines. Then
// the images are split into a fixed number of chunks (from the shape only), each accumulating a
// partial gw' (OC, KH, KW, C) and gb: per image, x is copied channels last into xt (Hp, Wp, C),
// and per output channel its non-zero gradients are listed (pixel order) and added with their
// windows of xt. The partials are added in chunk order and gw' is reordered into gw.
#include "cpu/conv2d_sparse_wgrad.hpp"
#include "cpu/conv2d_sparse_wgrad_rows.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "common/parallel.hpp"
#include "cpu/conv2d_winograd.hpp"        // winograd_mode
#include "cpu/conv2d_winograd_wgrad.hpp"  // winograd_wgrad_applies, the channels-last copy of x
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {
namespace {


using AddWindows = void (*)(const int32_t*, const float*, int, const float*, int64_t, int, int, float*);

constexpr int kMostChunks = 16;                       // 8 per thread on 2 cores
constexpr int64_t kPartialFloats = int64_t{1} << 22;  // 16 MiB for the partial sums

std::unique_ptr<float[]> scratch(size_t n) { return std::unique_ptr<float[]>(new float[n]); }

// The non-zeros of one plane g (OH, OW) in conv2d_parts::PooledNonzeros' window order (the 2x2
// windows, then an odd last column, then an odd last row): pixels and values, room for OH*OW each.
// No branch per entry (one on a ~20% random condition mispredicts often).
int scan_nonzeros(const float* g, int OH, int OW, int32_t* pixel, float* value) {
    int n = 0;
    auto take = [&](int p) {
        pixel[n] = p;
        value[n] = g[p];
        n += g[p] != 0.0f;  // a NaN is not zero
    };
    const int PH = OH / 2, PW = OW / 2;
    for (int ph = 0; ph < PH; ++ph)
        for (int pw = 0; pw < PW; ++pw) {
            const int p = 2 * ph * OW + 2 * pw;
            take(p);
            take(p + 1);
            take(p + OW);
            take(p + OW + 1);
        }
    if (OW % 2)
        for (int oh = 0; oh < 2 * PH; ++oh) take(oh * OW + OW - 1);
    if (OH % 2)
        for (int ow = 0; ow < OW; ++ow) take((OH - 1) * OW + ow);
    return n;
}

// 1 if one of x[0:n] is an infinity or NaN (all exponent bits set), else 0; integer operations only,
// so the loop vectorises (a float sum of x - x would be one long dependency chain)
int any_non_finite(const float* x, int64_t n) {
    int bad = 0;
#pragma omp simd reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, x + i, sizeof bits);
        bad |= (bits & 0x7F800000u) == 0x7F800000u;
    }
    return bad;
}

// One image's gradient, channel by channel: from a pooled source's routes, else from its dense
// (OC, OH*OW) block (built by the source once per image, or read from gy)
class ImageGradient {
public:
    ImageGradient(const Conv2dShape& s, const float* gy, const ConvGradSource* source)
        : s_(s), gy_(gy), source_(source), P_(s.OH * s.OW), dense_(scratch(source ? static_cast<size_t>(s.OC) * P_ : 0)) {
        if (source && source->pooled().gy) pooled_.reset(new conv2d_parts::PooledNonzeros(s, source->pooled()));
    }

    void start(int n) {
        n_ = n;
        built_ = false;
    }

    // channel o's non-zeros of the current image into pixel, value (room for OH*OW + 16 each)
    int nonzeros(int o, int32_t* pixel, float* value) {
        if (pooled_) return (*pooled_)(n_, o, pixel, value);
        return scan_nonzeros(plane(o), s_.OH, s_.OW, pixel, value);
    }

    // how many of channel o's gradients of the current image are not zero (pixel, value: scratch)
    int count(int o, int32_t* pixel, float* value) {
        if (pooled_) return (*pooled_)(n_, o, pixel, value);
        const float* g = plane(o);
        int n = 0;
        for (int p = 0; p < P_; ++p) n += g[p] != 0.0f;  // a NaN is not zero
        return n;
    }

private:
    const Conv2dShape& s_;
    const float* gy_;
    const ConvGradSource* source_;
    int P_, n_ = 0;
    std::unique_ptr<float[]> dense_;
    bool built_ = false;
    std::unique_ptr<conv2d_parts::PooledNonzeros> pooled_;  // behind a pool: the routes' non-zeros

    // channel o's dense (OH, OW) plane of the current image: gy's, or the source's block (built once)
    const float* plane(int o) {
        if (!source_) return gy_ + (static_cast<int64_t>(n_) * s_.OC + o) * P_;
        if (!built_) source_->images(n_, 1, dense_.get(), P_);
        built_ = true;
        return dense_.get() + static_cast<int64_t>(o) * P_;
    }
};

// Whether at most a third of the gradients are not zero; counts per image in parallel and
// stops once the bound is passed (the answer does not depend on where it stops)
bool mostly_zero(const Conv2dShape& s, const float* gy, const ConvGradSource* source) {
    const int P = s.OH * s.OW;
    const int64_t bound = static_cast<int64_t>(s.N) * s.OC * P / 3;
    if (source && source->pooled().gy) return true;  // one gradient per 2x2 window at most: no need to count
    std::atomic<int64_t> total{0};
    parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
        ImageGradient g(s, gy, source);
        std::vector<int32_t> pixel(P + 16);  // PooledNonzeros: room for 16 more
        std::vector<float> value(P + 16);
        for (int64_t n = n0; n < n1 && total.load(std::memory_order_relaxed) <= bound; ++n) {
            g.start(static_cast<int>(n));
            int64_t count = 0;
            for (int o = 0; o < s.OC; ++o) count += g.count(o, pixel.data(), value.data());
            total.fetch_add(count, std::memory_order_relaxed);
        }
    });
    return total.load() <= bound;
}

struct Plan {
    int Hp, Wp;
    int taps;         // KH * KW * C: one channel's row of gw'
    int chunks;
    int64_t w_size;   // OC * taps
};

Plan make_plan(const Conv2dShape& s) {
    Plan p{};
    p.Hp = s.H + 2 * s.PH;
    p.Wp = s.W + 2 * s.PW;
    p.taps = s.KH * s.KW * s.C;
    p.w_size = static_cast<int64_t>(s.OC) * p.taps;
    p.chunks = static_cast<int>(std::clamp<int64_t>(kPartialFloats / (p.w_size + s.OC), 1,
                                                    std::min<int64_t>(s.N, kMostChunks)));
    return p;
}

// Images [n_lo, n_hi) into part (OC, KH, KW, C) and gb_part (OC,) or null, both overwritten;
// false if a value of x or a non-zero gradient is not finite
bool run_chunk(const Conv2dShape& s, const Plan& p, const float* gy, const ConvGradSource* source, const float* x,
               int n_lo, int n_hi, float* part, float* gb_part) {
    const AddWindows add = simd_isa() == SimdIsa::avx512 ? sparse_wgrad::add_windows_avx512
                           : simd_isa() == SimdIsa::avx2 ? sparse_wgrad::add_windows_avx2
                                                         : sparse_wgrad::add_windows_plain;
    const auto& copy = simd_isa() == SimdIsa::avx512 ? wgrad::avx512_tiles()
                       : simd_isa() == SimdIsa::avx2 ? wgrad::avx2_tiles()
                                                     : wgrad::generic_tiles();
    const int P = s.OH * s.OW;
    const int64_t xt_size = static_cast<int64_t>(p.Hp) * p.Wp * s.C, row = static_cast<int64_t>(p.Wp) * s.C;
    auto xt = scratch(static_cast<size_t>(xt_size));
    std::vector<int32_t> pixel(P + 16), at(P), window(P);  // PooledNonzeros: room for 16 more
    std::vector<float> value(P + 16);
    for (int oh = 0; oh < s.OH; ++oh)  // pixel (oh, ow)'s window starts at xt[oh * SH, ow * SW, 0]
        for (int ow = 0; ow < s.OW; ++ow)
            window[oh * s.OW + ow] = static_cast<int32_t>((static_cast<int64_t>(oh) * s.SH * p.Wp + ow * s.SW) * s.C);
    std::fill(part, part + p.w_size, 0.0f);
    if (gb_part) std::fill(gb_part, gb_part + s.OC, 0.0f);
    ImageGradient g(s, gy, source);
    int bad = 0;
    for (int n = n_lo; n < n_hi; ++n) {
        copy.input_rows(x + static_cast<int64_t>(n) * s.C * s.H * s.W, s.C, s.H, s.W, s.PH, s.PW, 0, p.Hp, p.Wp,
                        xt.get());
        bad |= any_non_finite(xt.get(), xt_size);
        g.start(n);
        for (int o = 0; o < s.OC; ++o) {
            const int count = g.nonzeros(o, pixel.data(), value.data());
            bad |= any_non_finite(value.data(), count);
            float sum = 0.0f;
            for (int t = 0; t < count; ++t) {
                at[t] = window[pixel[t]];
                sum += value[t];
            }
            add(at.data(), value.data(), count, xt.get(), row, s.KH, s.KW * s.C, part + o * static_cast<int64_t>(p.taps));
            if (gb_part) gb_part[o] += sum;
        }
    }
    return !bad;
}

}  // namespace

bool sparse_wgrad_wanted(const Conv2dShape& s) {
    const WinogradMode mode = winograd_mode();
    if (mode != WinogradMode::automatic && mode != WinogradMode::off && winograd_wgrad_applies(s)) return false;
    const int64_t xt_size = static_cast<int64_t>(s.H + 2 * s.PH) * (s.W + 2 * s.PW) * s.C;
    return s.C >= 8 && s.N > 0 && s.OC > 0 && s.OH > 0 && s.OW > 0 && xt_size < (int64_t{1} << 31);
}

bool sparse_wgrad_takes(const Conv2dShape& s, const float* gy, const ConvGradSource* source) {
    return sparse_wgrad_wanted(s) && mostly_zero(s, gy, source);
}

bool conv2d_sparse_wgrad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                         float* gw, float* gb) {
    if (!mostly_zero(s, gy, source)) return false;
    const Plan p = make_plan(s);
    auto partial_w = scratch(static_cast<size_t>(p.chunks) * p.w_size);  // each chunk overwrites its own
    auto partial_b = scratch(gb ? static_cast<size_t>(p.chunks) * s.OC : 0);
    std::vector<unsigned char> finite(static_cast<size_t>(p.chunks), 1);
    parallel_chunks(p.chunks, [&](int64_t k) {
        const int n_lo = static_cast<int>(s.N * k / p.chunks), n_hi = static_cast<int>(s.N * (k + 1) / p.chunks);
        finite[k] = run_chunk(s, p, gy, source, x, n_lo, n_hi, partial_w.get() + k * p.w_size,
                              gb ? partial_b.get() + k * s.OC : nullptr);
    });
    if (!std::all_of(finite.begin(), finite.end(), [](unsigned char f) { return f != 0; })) return false;
    conv2d_parts::sum_partials(partial_w.get(), p.chunks, p.w_size);
    // gw[o, c, i, j] = gw'[o, i, j, c]
    const int khw = s.KH * s.KW;
    for (int o = 0; o < s.OC; ++o)
        for (int t = 0; t < khw; ++t)
            for (int c = 0; c < s.C; ++c)
                gw[(static_cast<int64_t>(o) * s.C + c) * khw + t] =
                    partial_w[static_cast<int64_t>(o) * p.taps + static_cast<int64_t>(t) * s.C + c];
    if (gb)
        for (int o = 0; o < s.OC; ++o) {
            float total = partial_b[o];
            for (int k = 1; k < p.chunks; ++k) total += partial_b[static_cast<size_t>(k) * s.OC + o];
            gb[o] = total;
        }
    return !any_non_finite(gw, p.w_size) && !(gb && any_non_finite(gb, s.OC));  // an overflow: the dense paths decide
}

}  // namespace deepkern::cpu
