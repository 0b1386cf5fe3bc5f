// conv2d (NCHW cross-correlation) as GEMMs over image windows.
//
// Per image n (CKK = C*KH*KW, P = OH*OW):
//   forward   y_n (OC, P)    = W (OC, CKK) @ cols_n (CKK, P) + bias[oc]      (bias fused in the GEMM store)
//             stride-1 layers with many taps skip the cols copy: the GEMM reads the windows
//             straight from the image (conv2d_forward_wide below)
//   backward  per group of G images side by side (columns of G*P):
//             gW (OC, CKK)  += gy_g (OC, G*P) @ cols_g^T (G*P, CKK)           (or its transpose, see below)
//             dcols (CKK, G*P) = W^T (CKK, OC) @ gy_g (OC, G*P), added back onto each gx_n by col2im
//             (skipped when no input gradient is wanted)
// With at least as many images as threads, the threads claim runs of whole images (the
// backward: a fixed number of chunks of groups, whatever the thread count) and their GEMMs run
// single-threaded (sgemm does that inside a parallel chunk); with fewer images the images run
// one after another and each GEMM uses the threads. im2col/col2im move O(CKK * P) floats per
// image, which stays in L2 for the seed networks' layers, against O(OC * CKK * P) multiply-adds;
// stride-1 layers take the AVX-512 im2col/col2im of conv2d_avx512.cpp when that SIMD variant is
// active.
#include "cpu/conv2d.hpp"

#include <xmmintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "common/parallel.hpp"
#include "cpu/conv2d_small.hpp"
#include "cpu/conv2d_sparse_wgrad.hpp"
#include "cpu/conv2d_winograd.hpp"
#include "cpu/conv2d_winograd_wgrad.hpp"
#include "cpu/matmul.hpp"
#include "cpu/pool.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {
namespace {

// Output columns [lo, hi) of kernel offset j whose input column ow*SW - PW + j lies inside [0, W).
// In 64 bits: pad + stride can pass 2**31 (geometry.hpp bounds each, not their sum).
void valid_range(int j, int pad, int stride, int in, int out, int& lo, int& hi) {
    // ow*stride - pad + j >= 0  and  ow*stride - pad + j <= in - 1
    const int64_t first = int64_t{pad} - j, last = int64_t{in} - 1 + pad - j;  // ow*stride in [first, last]
    lo = first <= 0 ? 0 : static_cast<int>(std::min<int64_t>(out, (first + stride - 1) / stride));
    hi = last < 0 ? 0 : static_cast<int>(std::min<int64_t>(out, last / stride + 1));
    if (hi < lo) hi = lo;
}

// dst[0:n] = src[0:n] for the short rows of im2col (an output row: tens of floats), in 4-float
// SSE moves with one overlapping move for the tail; a memcpy call costs more than the copy.
inline void copy_short(float* dst, const float* src, int n) {
    if (n < 4) {
        for (int i = 0; i < n; ++i) dst[i] = src[i];
        return;
    }
    int i = 0;
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_loadu_ps(src + i));
    if (i < n) _mm_storeu_ps(dst + n - 4, _mm_loadu_ps(src + n - 4));
}

// x is (C, H, W) of one image; cols is (C*KH*KW, OH*OW) with row stride ld, zero where the
// window hits padding
void im2col(const Conv2dShape& s, const float* x, float* cols, int64_t ld) {
    for (int c = 0; c < s.C; ++c) {
        const float* xc = x + static_cast<int64_t>(c) * s.H * s.W;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) {
                float* row = cols + (static_cast<int64_t>(c) * s.KH * s.KW + i * s.KW + j) * ld;
                int lo, hi;
                valid_range(j, s.PW, s.SW, s.W, s.OW, lo, hi);
                for (int oh = 0; oh < s.OH; ++oh) {
                    const int h = oh * s.SH - s.PH + i;
                    float* out = row + oh * s.OW;
                    if (h < 0 || h >= s.H) {
                        std::memset(out, 0, sizeof(float) * s.OW);
                        continue;
                    }
                    const float* xr = xc + static_cast<int64_t>(h) * s.W - s.PW + j;  // xr[ow*SW] = x[h, w]
                    std::fill(out, out + lo, 0.0f);
                    if (s.SW == 1)
                        copy_short(out + lo, xr + lo, hi - lo);
                    else
                        for (int ow = lo; ow < hi; ++ow) out[ow] = xr[ow * s.SW];
                    std::fill(out + hi, out + s.OW, 0.0f);
                }
            }
    }
}

// cols is (C*KH*KW, OH*OW) with row stride ld; adds each entry back onto x (C, H, W), which
// the caller zeroed
void col2im(const Conv2dShape& s, const float* cols, int64_t ld, float* x) {
    for (int c = 0; c < s.C; ++c) {
        float* xc = x + static_cast<int64_t>(c) * s.H * s.W;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) {
                const float* row = cols + (static_cast<int64_t>(c) * s.KH * s.KW + i * s.KW + j) * ld;
                int lo, hi;
                valid_range(j, s.PW, s.SW, s.W, s.OW, lo, hi);
                for (int oh = 0; oh < s.OH; ++oh) {
                    const int h = oh * s.SH - s.PH + i;
                    if (h < 0 || h >= s.H) continue;
                    float* xr = xc + static_cast<int64_t>(h) * s.W - s.PW + j;
                    const float* in = row + oh * s.OW;
                    if (s.SW == 1)
                        for (int ow = lo; ow < hi; ++ow) xr[ow] += in[ow];
                    else
                        for (int ow = lo; ow < hi; ++ow) xr[ow * s.SW] += in[ow];
                }
            }
    }
}

// Stride-1 layers take conv2d_avx512.cpp's im2col/col2im when the AVX-512 variant is active
// (one masked move per window row instead of the generic loops' per-row set-up and tails).
bool avx512_rows(const Conv2dShape& s) {
    return s.SH == 1 && s.SW == 1 && simd_isa() == SimdIsa::avx512;
}

// cols (C*KH*KW, OH*OW), row stride ld, from one image x (C, H, W)
void to_columns(const Conv2dShape& s, bool avx512, const float* x, float* cols, int64_t ld) {
    if (avx512)
        conv2d_isa::im2col_s1_avx512(s, x, cols, ld);
    else
        im2col(s, x, cols, ld);
}

// one image x (C, H, W) overwritten with the sum of its taps in cols (C*KH*KW, OH*OW), row stride ld
void from_columns(const Conv2dShape& s, bool avx512, const float* cols, int64_t ld, float* x) {
    if (avx512) {
        conv2d_isa::col2im_s1_avx512(s, cols, ld, x);
    } else {
        std::fill(x, x + static_cast<int64_t>(s.C) * s.H * s.W, 0.0f);
        col2im(s, cols, ld, x);
    }
}

// An uninitialised float buffer, for scratch that is always written before it is read
// (std::vector would zero it first: a wasted pass over up to megabytes per call).
std::unique_ptr<float[]> scratch(size_t n) { return std::unique_ptr<float[]>(new float[n]); }

// Sum of x[0:n] in 16 independent partial sums: a single running sum would serialise on the
// add latency (the compiler may not reorder float additions by itself).
float sum(const float* x, int n) {
    constexpr int kLanes = 16;
    float part[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) part[l] += x[i + l];
    float total = 0.0f;
    for (int l = 0; l < kLanes; ++l) total += part[l];
    for (; i < n; ++i) total += x[i];
    return total;
}

// Whether at most a third of gy (OC rows of n, row stride n) is not zero: the sparse input gradient's
// products of zeros are then skipped (seed CNN conv2 behind its pool: ~20% not zero; its fused
// backward at 2 threads, 128 images, medians: 8.37 -> 6.99 ms; the skipped work costs about twice
// the dense product's per product, as each one reloads a row of w, so a third is well inside the gain)
bool mostly_zero(const float* gy, int OC, int n) {
    const int64_t total = static_cast<int64_t>(OC) * n;
    int64_t nonzero = 0;
    for (int64_t i = 0; i < total; ++i) nonzero += gy[i] != 0.0f;
    return 3 * nonzero <= total;
}

// The non-zero gradients of a group of images as per-pixel lists, for the sparse input gradient
// behind a pool (a source with the pooled form): no dense gy to build and scan. Pixel q = g * P + p of the group has count[q] channels chan[q * OC + t], increasing, with
// values grad[q * OC + t]: the lists a scan of the dense gy gives, so the sums have its bits.
struct GroupLists {
    // uninitialised (a zero fill of chan and grad would cost a pass per chunk): written before read
    std::unique_ptr<int32_t[]> chan;
    std::unique_ptr<float[]> grad;
    size_t capacity = 0;
    std::vector<int32_t> count, pixel;
    std::vector<float> value;

    // false when more than a third of the gradients are not zero (mostly_zero's rule: the GEMM is
    // then the faster)
    bool build(const conv2d_parts::PooledNonzeros& nonzeros, const Conv2dShape& s, int n0, int G) {
        const int P = s.OH * s.OW, OC = s.OC;
        const size_t q_all = static_cast<size_t>(G) * P;
        if (capacity < q_all * OC) {
            capacity = q_all * OC;
            chan.reset(new int32_t[capacity]);
            grad.reset(new float[capacity]);
            count.resize(q_all);
            pixel.resize(P + 16);  // PooledNonzeros: room for 16 more
            value.resize(P + 16);
        }
        std::fill(count.begin(), count.begin() + q_all, 0);
        int64_t nonzero = 0;
        for (int g = 0; g < G; ++g)
            for (int o = 0; o < OC; ++o) {  // channels in increasing order: each pixel's list is sorted
                const int n = nonzeros(n0 + g, o, pixel.data(), value.data());
                nonzero += n;
                for (int t = 0; t < n; ++t) {
                    const int64_t q = static_cast<int64_t>(g) * P + pixel[t];
                    const int64_t at = q * OC + count[q]++;
                    chan[at] = o;
                    grad[at] = value[t];
                }
            }
        return 3 * nonzero <= static_cast<int64_t>(OC) * static_cast<int64_t>(q_all);
    }
};

// A 1x1, stride-1, unpadded convolution reads the image itself as its column matrix.
bool cols_are_input(const Conv2dShape& s) {
    return s.KH == 1 && s.KW == 1 && s.SH == 1 && s.SW == 1 && s.PH == 0 && s.PW == 0;
}

// Whole images per thread when there are enough of them and no enclosing parallel chunk.
bool split_images(const Conv2dShape& s) { return can_parallel() && s.N >= max_threads(); }

// The wide (no im2col) forward pays off from this many taps per output (C * KH * KW); below it,
// im2col is a small copy and the extra Wp / OW columns of the wide form cost more.
// (Measured on the seed CNN: 9 taps (1 channel) favour im2col, 288 taps favour the wide form
// with the generic im2col.) With the AVX-512 im2col, grouped columns beat it while one image's
// column matrix is small (2 threads, medians: seed 32->64 layer on 13x13, 139 KiB of columns,
// 3.29 ms vs 3.51 wide), not once it outgrows L2's share (16->32 channels on 32x32, 590 KiB:
// 4.39 vs 3.47 ms; 64->64 on 28x28, 1.8 MiB: 11.2 vs 9.9 ms).
constexpr int kWideMinTaps = 32;
constexpr int64_t kAvx512ColsMaxBytes = 256 * 1024;

// Forward of a stride-1 convolution with no im2col copy ("wide" output): in the zero-padded
// image xp (C, Hp, Wp), output pixel (oh, ow) reads xp[c, oh + i, ow + j] = xp_flat[off(c, i, j) + q]
// with q = oh * Wp + ow and off(c, i, j) = c*Hp*Wp + i*Wp + j. So one GEMM with B rows at those
// offsets computes y_wide (OC, Q) for every q < Q = (OH-1)*Wp + OW; the columns with ow >= OW
// are discarded when y_wide is compacted into y. It costs Wp/OW more multiply-adds than im2col
// but reads the image in place, which is cheaper when the image has several channels.
bool use_wide_forward(const Conv2dShape& s) {
    const int64_t taps = static_cast<int64_t>(s.C) * s.KH * s.KW;
    if (s.SH != 1 || s.SW != 1 || taps < kWideMinTaps) return false;
    const int64_t cols_bytes = taps * s.OH * s.OW * static_cast<int64_t>(sizeof(float));
    return !avx512_rows(s) || cols_bytes > kAvx512ColsMaxBytes;
}

// y (or sink, when given: each image's wide block, row stride Wp) as conv2d_forward
void conv2d_forward_wide(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu,
                         float* y, const ConvOutputSink* sink) {
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int Hp = s.H + 2 * s.PH, Wp = s.W + 2 * s.PW;
    const int Q = (s.OH - 1) * Wp + s.OW;
    const bool padded = s.PH > 0 || s.PW > 0;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
    const int64_t xp_img = static_cast<int64_t>(s.C) * Hp * Wp;
    std::vector<int64_t> offsets(ckk);
    for (int c = 0; c < s.C; ++c)
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) offsets[(c * s.KH + i) * s.KW + j] = c * static_cast<int64_t>(Hp) * Wp + i * Wp + j;

    auto image = [&](int n, std::vector<float>& xp, std::vector<float>& wide) {
        const float* src = x + n * x_img;
        if (padded) {  // xp (C, Hp, Wp): the image inside a zero border
            std::fill(xp.begin(), xp.end(), 0.0f);
            for (int c = 0; c < s.C; ++c)
                for (int h = 0; h < s.H; ++h)
                    copy_short(xp.data() + (static_cast<int64_t>(c) * Hp + h + s.PH) * Wp + s.PW,
                               src + (static_cast<int64_t>(c) * s.H + h) * s.W, s.W);
            src = xp.data();
        }
        // y_wide (OC, Q) = W (OC, CKK) @ windows (CKK, Q) + bias (per row)
        GemmArgs g;
        g.M = s.OC;
        g.N = Q;
        g.K = ckk;
        g.A = w;
        g.lda = ckk;
        g.B = src;
        g.b_row_offsets = offsets.data();
        g.C = wide.data();
        g.ldc = Q;
        g.bias_row = bias;
        g.relu = relu;
        sgemm(g);
        if (sink) {
            sink->image(n, wide.data(), Q, Wp);
            return;
        }
        float* yn = y + n * y_img;
        for (int o = 0; o < s.OC; ++o)
            for (int oh = 0; oh < s.OH; ++oh)
                copy_short(yn + (static_cast<int64_t>(o) * s.OH + oh) * s.OW,
                           wide.data() + static_cast<int64_t>(o) * Q + oh * Wp, s.OW);
    };
    const size_t xp_size = padded ? static_cast<size_t>(xp_img) : 0;
    const size_t wide_size = static_cast<size_t>(s.OC) * Q;
    if (split_images(s)) {  // images are independent: runs of them are claimed dynamically
        parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
            std::vector<float> xp(xp_size), wide(wide_size);
            for (int64_t n = n0; n < n1; ++n) image(static_cast<int>(n), xp, wide);
        });
    } else {
        std::vector<float> xp(xp_size), wide(wide_size);
        for (int n = 0; n < s.N; ++n) image(n, xp, wide);
    }
}

// Images per backward GEMM (see conv2d_backward): enough for a reduction of about 512 columns
// (K blocks of the GEMM are 384 deep), while the group's column matrix stays within 1 MiB (L2).
// (Seed CNN's 32->64 layer, P = 121, batch 128 on 2 threads: 1 image 7.48 ms, 2 images 7.26,
// 4 images 7.05, 8 images 7.03 per backward, medians of 60.)
int images_per_gemm(const Conv2dShape& s, int ckk) {
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    const int64_t by_width = 512 / ohw;
    const int64_t by_cache = (int64_t{1} << 18) / std::max<int64_t>(1, int64_t{ckk} * ohw);  // 1 MiB of floats
    return static_cast<int>(std::clamp<int64_t>(std::min(by_width, by_cache), 1, 8));
}

// Images per forward GEMM: the group's column matrix (its B) is read in place up to 512 KiB,
// so at most that many columns; about 512 of them. (Seed 32->64 layer, 2 threads, medians:
// 1 image 3.37 ms, 2 images 3.42, 3 images 3.29, 4 images 3.65 (B packed), 8 images 3.59.)
int forward_images_per_gemm(const Conv2dShape& s, int ckk) {
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    const int64_t by_width = 512 / ohw;
    const int64_t by_cache = (int64_t{1} << 17) / std::max<int64_t>(1, int64_t{ckk} * ohw);  // 512 KiB of floats
    return static_cast<int>(std::clamp<int64_t>(std::min(by_width, by_cache), 1, 8));
}

// conv2d_forward into y, or (y null) handing each image's block to sink; relu: max(., 0) in the store
void forward_impl(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                  const ConvOutputSink* sink) {
    gemm_variant();  // surfaces a bad DEEPKERN_GEMM here, not from inside the parallel region
    if (winograd_forward(s, x, w, bias, relu, y, sink)) return;  // 3x3 stride-1 layers (conv2d_winograd.hpp)
    if (use_wide_forward(s)) {
        conv2d_forward_wide(s, x, w, bias, relu, y, sink);
        return;
    }
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
    const bool direct = cols_are_input(s);
    const bool rows512 = avx512_rows(s);
    const int group = direct ? 1 : forward_images_per_gemm(s, ckk);
    // A group's columns side by side: y_g (OC, G*P) = W (OC, CKK) @ cols_g (CKK, G*P) + bias,
    // then each image's (OC, P) block copied out or handed to the sink (without a sink, one image
    // writes y_n directly)
    auto run_group = [&](int n0, float* cols, float* y_group) {
        const int G = std::min(group, s.N - n0);
        const int ld = G * ohw;
        const float* cb = x + n0 * x_img;
        if (!direct) {
            for (int g = 0; g < G; ++g) to_columns(s, rows512, x + (n0 + g) * x_img, cols + g * ohw, ld);
            cb = cols;
        }
        GemmArgs a;
        a.M = s.OC;
        a.N = ld;
        a.K = ckk;
        a.A = w;
        a.lda = ckk;
        a.B = cb;
        a.ldb = ld;
        a.C = G > 1 || sink ? y_group : y + n0 * y_img;
        a.ldc = ld;
        a.bias_row = bias;
        a.relu = relu;
        sgemm(a);
        if (sink)
            for (int g = 0; g < G; ++g) sink->image(n0 + g, y_group + g * ohw, ld, s.OW);
        else if (G > 1)
            for (int g = 0; g < G; ++g)
                for (int o = 0; o < s.OC; ++o)
                    std::memcpy(y + (n0 + g) * y_img + static_cast<int64_t>(o) * ohw,
                                y_group + static_cast<int64_t>(o) * ld + g * ohw, sizeof(float) * ohw);
    };
    const size_t cols_size = direct ? 0 : static_cast<size_t>(ckk) * group * ohw;
    const size_t y_group_size = group > 1 || sink ? static_cast<size_t>(s.OC) * group * ohw : 0;
    if (split_images(s)) {  // groups are independent: runs of them are claimed dynamically
        parallel_for(0, (s.N + group - 1) / group, 1, [&](int64_t g0, int64_t g1) {
            auto cols = scratch(cols_size), y_group = scratch(y_group_size);
            for (int64_t g = g0; g < g1; ++g) run_group(static_cast<int>(g * group), cols.get(), y_group.get());
        });
    } else {
        auto cols = scratch(cols_size), y_group = scratch(y_group_size);
        for (int n0 = 0; n0 < s.N; n0 += group) run_group(n0, cols.get(), y_group.get());
    }
}

// gw and gb (or null) by a path of their own where one applies; true when one ran. In order: from the
// non-zero gradients alone behind a pool (conv2d_sparse_wgrad.hpp), Winograd F(3x3, 2x2) for 3x3
// stride-1 layers (conv2d_winograd_wgrad.hpp); both decline on non-finite values, leaving gw and gb
// to the GEMMs (the same result as without them); few taps (a first layer) directly (conv2d_small.hpp).
bool weight_grad_own_path(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                          float* gw, float* gb) {
    if (sparse_wgrad_wanted(s) && conv2d_sparse_wgrad(s, gy, source, x, gw, gb)) return true;
    if (winograd_wgrad_applies(s) && conv2d_winograd_wgrad(s, gy, source, x, gw, gb)) return true;
    if (!conv2d_small_weight_grad_applies(s)) return false;
    conv2d_small_weight_grad(s, gy, source, x, gw, gb);
    return true;
}

// conv2d_backward with the output gradient read from gy, or (gy null) built by source
void backward_impl(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                   const float* w, float* gx, float* gw, float* gb) {
    // The input gradient by Winograd (conv2d_winograd.hpp) where it applies; the direct path
    // below then computes the weight and bias gradients only.
    if (gx && winograd_input_grad(s, gy, source, w, gx)) gx = nullptr;
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
    const size_t w_size = static_cast<size_t>(s.OC) * ckk;
    const bool direct = cols_are_input(s);
    if (gw && weight_grad_own_path(s, gy, source, x, gw, gb)) {
        if (!gx) return;
        gw = gb = nullptr;  // only the input gradient is left for the GEMMs
    }
    if (s.OC == 0) {  // no output channel: x had no effect; gw and gb are empty
        if (gx) std::fill(gx, gx + s.N * x_img, 0.0f);
        return;
    }
    // Both operands of the weight-gradient GEMM hold the reduction (G*P) contiguously, so the one
    // on the B side is transposed while packed, and so is the A side unless C is narrow (the
    // driver reads A in place when C has at most two column tiles, 64 columns with AVX-512).
    // Accumulating gW^T (CKK, OC) transposes gy (OC x G*P); gW (OC, CKK) transposes the columns
    // (CKK x G*P). The transposed form wins unless OC is both wide and above CKK.
    // With very few taps (the seed CNN's first layer: CKK = 9, OC = 32, P = 676) the transposed
    // form's packing of gy (OC x P per image) outweighs the product: 0.75 vs 1.0 ms, medians.
    const bool gw_transposed = (s.OC <= 64 || s.OC <= ckk) && ckk >= 16;
    // Behind a 2x2 pool most of gy is zero: the input gradient then skips those products, with
    // the AVX-512 GEMM's and col2im's bits (so only when that GEMM is the one in use, and w is finite)
    const bool sparse_ok = gx && !direct && gemm_variant() == "avx512" && simd_isa() == SimdIsa::avx512 &&
                           conv2d_parts::all_finite(w, static_cast<int64_t>(w_size));
    const int group = direct ? 1 : images_per_gemm(s, ckk);
    const bool rows512 = avx512_rows(s);
    std::unique_ptr<conv2d_parts::PooledNonzeros> pooled_nonzeros;  // behind a pool: the routes' non-zeros
    if (source && source->pooled().gy) pooled_nonzeros.reset(new conv2d_parts::PooledNonzeros(s, source->pooled()));
    std::unique_ptr<conv2d_isa::SparseInputGrad> sparse_gx;  // w in tap-major order, for the sparse input gradient
    if (sparse_ok) sparse_gx.reset(new conv2d_isa::SparseInputGrad(s, w));
    gemm_variant();  // surfaces a bad DEEPKERN_GEMM here, not from inside the parallel region

    // Work items are chunks: runs of consecutive groups of `group` images, each accumulating
    // its own partial gW/gb, which are added in chunk order at the end. Chunks are claimed
    // dynamically (a worker that loses its core to another process delays one chunk, not a
    // fixed half of the batch). Their number depends on the shapes only, never on the thread
    // count, so the sums come out bit-identical on every run and with any number of threads.
    const int groups = (s.N + group - 1) / group;
    constexpr int64_t kMostChunks = 16;                   // 8 per thread on 2 cores
    constexpr int64_t kPartialFloats = int64_t{1} << 22;  // 16 MiB for the partials
    const int64_t per_chunk = static_cast<int64_t>(w_size) + s.OC;
    const int chunks = static_cast<int>(
        std::clamp<int64_t>(kPartialFloats / per_chunk, 1, std::min<int64_t>(std::max(groups, 1), kMostChunks)));
    if (s.N == 0) {  // no image: zero gradients
        if (gw) std::fill(gw, gw + w_size, 0.0f);
        if (gb) std::fill(gb, gb + s.OC, 0.0f);
        return;
    }
    // written by each chunk's first group before any read
    auto partial_w = scratch(gw ? static_cast<size_t>(chunks) * w_size : 0);
    auto partial_b = scratch(gb ? static_cast<size_t>(chunks) * s.OC : 0);

    // A group's images sit side by side as the columns of one GEMM: cols (CKK, G*P) and
    // gy (OC, G*P), so the weight gradient is one product with K = G*P and the column gradient
    // one product with N = G*P (with a per-image K = P of ~100, the micro-kernel's C-tile loads
    // and stores and the per-call operand packing take a large share of each product).
    struct Scratch {
        std::unique_ptr<float[]> cols;      // the group's im2col; then (once gW has read it) its dcols
        std::unique_ptr<float[]> gy_group;  // gy of the group's images side by side
        GroupLists lists;                   // or, for the sparse input gradient, the source's non-zeros
        conv2d_isa::SparseInputGrad::Scratch sparse;  // the sparse input gradient's working memory
    };
    auto chunk = [&](int k, Scratch& sc) {
        const int g_lo = static_cast<int>(static_cast<int64_t>(groups) * k / chunks);
        const int g_hi = static_cast<int>(static_cast<int64_t>(groups) * (k + 1) / chunks);
        float* gw_part = gw ? partial_w.get() + static_cast<size_t>(k) * w_size : nullptr;
        float* gb_part = gb ? partial_b.get() + static_cast<size_t>(k) * s.OC : nullptr;
        for (int gi = g_lo; gi < g_hi; ++gi) {
            const int n0 = gi * group, G = std::min(group, s.N - n0);
            const int ld = G * ohw;  // columns of this group's matrices
            const float beta = gi == g_lo ? 0.0f : 1.0f;
            // only the input gradient left: straight from a source's non-zero lists where it has them
            if (pooled_nonzeros && sparse_ok && !gw_part && !gb_part && sc.lists.build(*pooled_nonzeros, s, n0, G)) {
                for (int g = 0; g < G; ++g) {
                    const int64_t at = static_cast<int64_t>(g) * ohw;  // the image's first pixel in the lists
                    sparse_gx->from_lists(sc.lists.chan.get() + at * s.OC, sc.lists.grad.get() + at * s.OC,
                                          sc.lists.count.data() + at, s.OC, gx + (n0 + g) * x_img, sc.sparse);
                }
                continue;
            }
            // gyb (OC, G*P)
            const float* gyb = source ? nullptr : gy + n0 * y_img;
            if (source) {
                source->images(n0, G, sc.gy_group.get(), ld);
                gyb = sc.gy_group.get();
            } else if (G > 1) {
                for (int o = 0; o < s.OC; ++o)
                    for (int g = 0; g < G; ++g)
                        std::memcpy(sc.gy_group.get() + static_cast<int64_t>(o) * ld + g * ohw,
                                    gyb + g * y_img + static_cast<int64_t>(o) * ohw, sizeof(float) * ohw);
                gyb = sc.gy_group.get();
            }
            if (gw_part) {
                // cb (CKK, G*P): the group's columns (a 1x1 layer's image is its own, G == 1)
                const float* cb = x + n0 * x_img;
                if (!direct) {
                    for (int g = 0; g < G; ++g)
                        to_columns(s, rows512, x + (n0 + g) * x_img, sc.cols.get() + g * ohw, ld);
                    cb = sc.cols.get();
                }
                if (gw_transposed)  // gW^T (CKK, OC) (+)= cb (CKK, G*P) @ gyb^T (G*P, OC)
                    sgemm(false, true, ckk, s.OC, ld, cb, ld, gyb, ld, beta, gw_part, s.OC, nullptr, false);
                else                // gW (OC, CKK) (+)= gyb (OC, G*P) @ cb^T (G*P, CKK)
                    sgemm(false, true, s.OC, ckk, ld, gyb, ld, cb, ld, beta, gw_part, ckk, nullptr, false);
            }
            if (gb_part)
                for (int o = 0; o < s.OC; ++o) {
                    const float part = sum(gyb + static_cast<int64_t>(o) * ld, ld);
                    gb_part[o] = gi == g_lo ? part : gb_part[o] + part;
                }
            if (!gx) continue;  // no input gradient wanted
            if (direct) {       // gx_n (C, P) = W^T (C, OC) @ gy_n (OC, P)
                sgemm(true, false, ckk, ohw, s.OC, w, ckk, gyb, ohw, 0.0f, gx + n0 * x_img, ohw, nullptr, false);
                continue;
            }
            if (sparse_ok && mostly_zero(gyb, s.OC, ld)) {  // each gx_n from its non-zero gradients alone
                for (int g = 0; g < G; ++g) sparse_gx->from_dense(gyb + g * ohw, ld, gx + (n0 + g) * x_img, sc.sparse);
                continue;
            }
            // dcols (CKK, G*P) = W^T (CKK, OC) @ gyb (OC, G*P), then col2im onto each gx_n
            sgemm(true, false, ckk, ld, s.OC, w, ckk, gyb, ld, 0.0f, sc.cols.get(), ld, nullptr, false);
            for (int g = 0; g < G; ++g)
                from_columns(s, rows512, sc.cols.get() + g * ohw, ld, gx + (n0 + g) * x_img);
        }
    };
    // The partials summed in chunk order into the first one, over its entries [lo, hi)
    // (contiguous rows, so the adds vectorise).
    constexpr size_t kSumBlock = 4096;
    const size_t sum_blocks = (w_size + kSumBlock - 1) / kSumBlock;
    auto add_partials = [&](size_t block) {
        const size_t lo = block * kSumBlock, hi = std::min(w_size, lo + kSumBlock);
        float* first = partial_w.get();
        for (int k = 1; k < chunks; ++k) {
            const float* part = partial_w.get() + static_cast<size_t>(k) * w_size;
            for (size_t i = lo; i < hi; ++i) first[i] += part[i];
        }
    };
    // gw (OC, CKK) and gb for output channels [o_lo, o_hi), from the summed first partial
    auto store = [&](int o_lo, int o_hi) {
        for (int o = o_lo; o < o_hi; ++o) {
            float* gwo = gw + static_cast<int64_t>(o) * ckk;
            if (gw_transposed)
                for (int kk = 0; kk < ckk; ++kk) gwo[kk] = partial_w[static_cast<size_t>(kk) * s.OC + o];
            else
                std::memcpy(gwo, partial_w.get() + static_cast<size_t>(o) * ckk, sizeof(float) * ckk);
            if (gb) {
                float total = partial_b[o];
                for (int k = 1; k < chunks; ++k) total += partial_b[static_cast<size_t>(k) * s.OC + o];
                gb[o] = total;
            }
        }
    };
    const size_t cols_size = direct ? 0 : static_cast<size_t>(ckk) * group * ohw;
    const size_t gy_size = group > 1 || source ? static_cast<size_t>(s.OC) * group * ohw : 0;
    parallel_chunks(chunks, [&](int64_t k) {  // each chunk's GEMMs run serially on its thread
        Scratch sc{scratch(cols_size), scratch(gy_size), GroupLists{}, {}};
        chunk(static_cast<int>(k), sc);
    });
    if (!gw) return;  // only the input gradient was wanted
    if (chunks > 1)
        parallel_for(0, static_cast<int64_t>(sum_blocks), 1,
                     [&](int64_t b0, int64_t b1) { for (int64_t b = b0; b < b1; ++b) add_partials(b); });
    parallel_ranges(s.OC, static_cast<int64_t>(w_size), 1, [&](int64_t o0, int64_t o1) {
        store(static_cast<int>(o0), static_cast<int>(o1));
    });
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
    forward_impl(s, x, w, bias, false, y, nullptr);
}

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias,
                    const ConvOutputSink& sink) {
    forward_impl(s, x, w, bias, false, nullptr, &sink);
}

void conv2d_forward_relu(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
    forward_impl(s, x, w, bias, true, y, nullptr);
}

void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                     float* gx, float* gw, float* gb) {
    backward_impl(s, gy, nullptr, x, w, gx, gw, gb);
}

void conv2d_backward(const Conv2dShape& s, const ConvGradSource& gy_source, const float* x, const float* w,
                     float* gx, float* gw, float* gb) {
    backward_impl(s, nullptr, &gy_source, x, w, gx, gw, gb);
}

void conv2d_parts::to_columns(const Conv2dShape& s, const float* x, float* cols, int64_t ld) {
    cpu::to_columns(s, avx512_rows(s), x, cols, ld);
}

void conv2d_parts::from_columns(const Conv2dShape& s, const float* cols, int64_t ld, float* x) {
    cpu::from_columns(s, avx512_rows(s), cols, ld, x);
}

bool conv2d_parts::all_finite(const float* x, int64_t n) {
    float check = 0.0f;  // x - x is 0 for a finite x, NaN for an infinity or NaN
    for (int64_t i = 0; i < n; ++i) check += x[i] - x[i];
    return check == 0.0f;
}

conv2d_parts::PooledNonzeros::PooledNonzeros(const Conv2dShape& s, ConvGradSource::Pooled pooled)
    : PH_(s.OH / 2), PW_(s.OW / 2), OW_(s.OW), OC_(s.OC), pooled_(pooled), base_(static_cast<size_t>(PH_) * PW_) {
    max2x2_window_bases(OW_, PH_, PW_, base_.data());
}

int conv2d_parts::PooledNonzeros::operator()(int n, int o, int32_t* pixel, float* value) const {
    const int64_t at = (static_cast<int64_t>(n) * OC_ + o) * PH_ * PW_;
    return max2x2_route_nonzeros(pooled_.gy + at, pooled_.route + at, base_.data(), PH_ * PW_, OW_, pixel, value);
}

void conv2d_parts::sum_partials(float* partials, int64_t chunks, int64_t size) {
    constexpr int64_t kSumBlock = 4096;
    if (chunks <= 1) return;
    parallel_for(0, (size + kSumBlock - 1) / kSumBlock, 1, [&](int64_t b0, int64_t b1) {
        const int64_t lo = b0 * kSumBlock, hi = std::min(size, b1 * kSumBlock);
        for (int64_t k = 1; k < chunks; ++k) {
            const float* part = partials + k * size;
            for (int64_t i = lo; i < hi; ++i) partials[i] += part[i];
        }
    });
}

void conv2d_parts::row_sums(const float* rows, int OC, int n, int64_t ld, float* sums, bool add) {
    for (int o = 0; o < OC; ++o) {
        const float part = sum(rows + o * ld, n);
        sums[o] = add ? sums[o] + part : part;
    }
}

}  // namespace deepkern::cpu
