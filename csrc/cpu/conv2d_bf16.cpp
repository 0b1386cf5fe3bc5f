// conv2d with bf16 products and fp32 sums (conv2d_bf16.hpp): conv2d.cpp's GEMMs on operands
// rounded to bfloat16 while they are packed (gemm_bf16.hpp), each operand packed once.
//
// Per image n (CKK = C*KH*KW, P = OH*OW):
//   forward   y_n (OC, P) = W (OC, CKK) @ cols_n (CKK, P) + bias[oc]           W packed once per call
//   backward  per group of G images side by side (columns of G*P):
//             gW^T (CKK, OC) (+)= cols_g (CKK, G*P) @ gy_g^T (G*P, OC)        a partial per chunk
//             dcols (CKK, G*P) = W^T (CKK, OC) @ gy_g (OC, G*P), added back onto each gx_n by
//             col2im                                                        W^T packed once per call
// The weight gradient is always the transposed product: the seed layers' CKK (9, 288) fills the
// 14-row tiles and their OC (32, 64) the 32-column ones, where the other orientation leaves a
// 32-column tile with 9 used columns or 14-row tiles over 64 rows partly empty.
// As in conv2d.cpp, chunks of groups (a count that depends on the shapes only) accumulate their
// own partial gW, added in chunk order, so the bits do not depend on the thread count; every
// output of the forward and of dcols is summed by one GEMM tile in a fixed k order.
// 3x3 stride-1 layers go to bf16 Winograd first (forward, input gradient, weight gradient, each
// where its rule picks it); what it declines (mode, shape, non-finite data) runs here.
// A backward whose output gradient is mostly zero (behind a 2x2 max-pool: at most one conv output
// in four gets a gradient) runs fp32's instead, whose sparse paths leave the zeros' products out
// (conv2d_sparse_wgrad.hpp, the sparse input gradient): fewer products than any bf16 path here
// (seed CNN conv2: ~3x fewer), in fp32 at that. The same rule for a dense gradient with that many
// zeros keeps the fused layer equal to the plain ops. Not where bf16 Winograd takes the input
// gradient (larger planes), nor with DEEPKERN_WINOGRAD=off (the bf16 GEMMs, as before).
// A few-tap layer (C*KH*KW <= 9: a 3x3 first layer on one-channel images) runs fp32's forward and
// weight gradient: a reduction of 9 leaves bf16 nothing to win (5 pairs for 9 products, the packing
// and the stored conv output dominate), and fp32 has direct kernels for it (conv2d_small.hpp: the
// fused conv + ReLU + pool in registers, the routed weight gradient). The input gradient, whose
// reduction is OC*KH*KW, stays bf16. Seed CNN conv1 (128x1x28x28 -> 32), fp32 / bf16 ms, 1 thread
// CPU time, medians: fused forward 1.19 / 1.46, fused weight gradient 1.28 / 1.88, plain forward
// 1.59 / 2.58 (2 threads, quiet: fused 0.56 / 0.64 and 0.68 / 0.84); at 27 taps they are even
// (150x150 network's 3 -> 32: fused forward 19.7 / 19.8, weight gradient 21.4 / 20.4), so it stays bf16.
// Again only in DEEPKERN_WINOGRAD's automatic mode; the fused layer and the plain ops both follow it.
#include "cpu/conv2d_bf16.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "common/parallel.hpp"
#include "cpu/conv2d_sparse_wgrad.hpp"
#include "cpu/conv2d_winograd.hpp"
#include "cpu/conv2d_winograd_wgrad.hpp"
#include "cpu/gemm_bf16.hpp"

namespace deepkern::cpu {
namespace {

// Uninitialised scratch, always written before it is read.
template <class T>
std::unique_ptr<T[]> scratch(int64_t n) {
    return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// No products at all (no image, no output or no input channel): the fp32 kernels give the result.
bool no_products(const Conv2dShape& s) { return s.N == 0 || s.OC == 0 || s.C == 0; }

// Whether the backward runs fp32's, whose sparse paths take this mostly-zero gradient (see the top):
// in DEEPKERN_WINOGRAD's automatic mode (off keeps the bf16 im2col GEMMs, as before) and where the
// input gradient is not bf16 Winograd's (larger planes, where that beats fp32's: the 150x150
// network trained at 0.86x with its backward on fp32's, 2 threads)
bool fp32_sparse_backward(const Conv2dShape& s, const float* gy, const ConvGradSource* source) {
    return winograd_mode() == WinogradMode::automatic && !winograd_input_grad_wanted(s, true) &&
           sparse_wgrad_takes(s, gy, source);
}

// Whether the weight gradient runs fp32's (few taps, see the top; the forward's rule is the same)
bool fp32_weight_grad(const Conv2dShape& s) { return conv2d_bf16_forward_runs_fp32(s); }

// Images per backward group: about 512 columns (the reduction of the weight-gradient product)
// while the group's fp32 columns stay within 1 MiB (L2).
int images_per_group(const Conv2dShape& s, int64_t ckk) {
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW;
    const int64_t by_width = 512 / ohw;
    const int64_t by_cache = (int64_t{1} << 18) / std::max<int64_t>(1, ckk * ohw);
    return static_cast<int>(std::clamp<int64_t>(std::min(by_width, by_cache), 1, 8));
}

// conv2d_forward_bf16 into y, or (sink) handing each image's (OC, OH, OW) block to sink; relu: max(., 0) in the store
void forward_impl(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                  const ConvOutputSink* sink) {
    if (winograd_forward(s, x, w, bias, relu, y, sink, true)) return;  // 3x3 stride-1 layers, bf16 products
    const int64_t ckk = static_cast<int64_t>(s.C) * s.KH * s.KW, P = static_cast<int64_t>(s.OH) * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = s.OC * P;
    auto wp = scratch<uint32_t>(bf16::packed_a_pairs(s.OC, ckk));  // W (OC, CKK) as A panels
    bf16::pack_a_all(s.OC, ckk, w, ckk, 1, wp.get());
    // Runs of images per thread (their packing and products then run on it); one image alone
    // shares its packing and product out to the threads.
    parallel_for(0, s.N, 1, [&](int64_t n0, int64_t n1) {
        auto cols = scratch<float>(ckk * P);                                  // (CKK, P)
        auto colp = scratch<uint32_t>(bf16::packed_b_pairs(ckk, P));         // cols as B panels
        auto block = scratch<float>(sink ? y_img : 0);                        // (OC, P) for the sink
        for (int64_t n = n0; n < n1; ++n) {
            conv2d_parts::to_columns(s, x + n * x_img, cols.get(), P);
            bf16::pack_b_all(ckk, P, cols.get(), P, 1, colp.get());
            // y_n (OC, P) = [relu](W @ cols_n + bias (per row))
            float* out = sink ? block.get() : y + n * y_img;
            bf16::gemm_packed(s.OC, P, ckk, wp.get(), colp.get(), out, P, false, nullptr, bias, relu);
            if (sink) sink->image(static_cast<int>(n), out, P, s.OW);
        }
    });
}

// conv2d_backward_bf16 with the output gradient read from gy or (gy null) built by source
void backward_impl(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                   const float* w, float* gx, float* gw, float* gb) {
    // 3x3 stride-1 layers by bf16 Winograd where they apply (a non-finite value leaves the work to the
    // GEMMs below): the input gradient (conv2d_winograd.hpp), then gw and gb
    // (conv2d_winograd_wgrad.hpp) on fp32's rule, but only when the input gradient does not run here:
    // the GEMMs' pass below makes gw beside gx for less than a pass of its own (1 thread, CPU time,
    // Winograd / im2col in ms; without gx: seed conv2 4.9 / 5.7, fused 4.62 / 4.69, 32 -> 64 on 74x74
    // 45 / 64, 64 -> 64 on 36x36 14 / 27, on 17x17 4.3 / 4.4; seed conv2's fused backward with gx
    // by im2col 8.95 with a Winograd gw, 8.42 without).
    if (gx && winograd_input_grad(s, gy, source, w, gx, true)) gx = nullptr;
    if (gw && !gx && winograd_wgrad_applies(s) && conv2d_winograd_wgrad(s, gy, source, x, gw, gb, true)) return;
    if (gw && fp32_weight_grad(s)) {  // few taps: fp32's weight gradient; the input gradient below
        if (source)
            conv2d_backward(s, *source, x, w, nullptr, gw, gb);
        else
            conv2d_backward(s, gy, x, w, nullptr, gw, gb);
        if (!gx) return;
        gw = gb = nullptr;
    }
    const int64_t ckk = static_cast<int64_t>(s.C) * s.KH * s.KW, P = static_cast<int64_t>(s.OH) * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = s.OC * P, w_size = s.OC * ckk;
    const int group = images_per_group(s, ckk);
    const int64_t groups = (s.N + group - 1) / group, widest = group * P;
    constexpr int64_t kMostChunks = 16;                   // 8 per thread on 2 cores
    constexpr int64_t kPartialFloats = int64_t{1} << 22;  // 16 MiB for the partials
    const int64_t chunks = std::clamp<int64_t>(kPartialFloats / w_size, 1, std::min(groups, kMostChunks));

    std::unique_ptr<uint32_t[]> wtp;  // W^T (CKK, OC) as A panels: A(kk, o) = w[o * CKK + kk]
    if (gx) {
        wtp = scratch<uint32_t>(bf16::packed_a_pairs(ckk, s.OC));
        bf16::pack_a_all(ckk, s.OC, w, 1, ckk, wtp.get());
    }
    auto partial = scratch<float>(gw ? chunks * w_size : 0);  // (chunks, CKK, OC), each written by its first group
    auto partial_b = scratch<float>(gb ? chunks * s.OC : 0);   // (chunks, OC)

    parallel_chunks(chunks, [&](int64_t k) {  // a chunk's products run serially on its thread
        auto cols = scratch<float>(ckk * widest);                              // (CKK, G*P), then dcols
        auto gy_group = scratch<float>(group > 1 || source ? s.OC * widest : 0);  // (OC, G*P)
        auto colp = scratch<uint32_t>(gw ? bf16::packed_a_pairs(ckk, widest) : 0);  // cols as A panels
        auto gyt = scratch<uint32_t>(gw ? bf16::packed_b_pairs(widest, s.OC) : 0);  // gy^T as B panels
        auto gyp = scratch<uint32_t>(gx ? bf16::packed_b_pairs(s.OC, widest) : 0);  // gy as B panels
        float* part = partial.get() + k * w_size;
        const int64_t g_lo = groups * k / chunks, g_hi = groups * (k + 1) / chunks;
        for (int64_t gi = g_lo; gi < g_hi; ++gi) {
            const int64_t n0 = gi * group, G = std::min<int64_t>(group, s.N - n0), ld = G * P;
            const float* gyb = source ? gy_group.get() : gy + n0 * y_img;  // (OC, G*P), row stride ld
            if (source) {
                source->images(static_cast<int>(n0), static_cast<int>(G), gy_group.get(), ld);
            } else if (G > 1) {
                for (int64_t o = 0; o < s.OC; ++o)
                    for (int64_t g = 0; g < G; ++g)
                        std::memcpy(gy_group.get() + o * ld + g * P, gyb + g * y_img + o * P, sizeof(float) * P);
                gyb = gy_group.get();
            }
            if (gw) {  // gW^T (CKK, OC) (+)= cols (CKK, G*P) @ gyb^T (G*P, OC)
                for (int64_t g = 0; g < G; ++g)
                    conv2d_parts::to_columns(s, x + (n0 + g) * x_img, cols.get() + g * P, ld);
                bf16::pack_a_all(ckk, ld, cols.get(), ld, 1, colp.get());
                bf16::pack_b_all(ld, s.OC, gyb, 1, ld, gyt.get());
                bf16::gemm_packed(ckk, s.OC, ld, colp.get(), gyt.get(), part, s.OC, gi > g_lo);
            }
            if (gb) conv2d_parts::row_sums(gyb, s.OC, static_cast<int>(ld), ld, partial_b.get() + k * s.OC, gi > g_lo);
            if (!gx) continue;  // no input gradient wanted
            // dcols (CKK, G*P) = W^T (CKK, OC) @ gyb (OC, G*P), into cols (already packed), then col2im
            bf16::pack_b_all(s.OC, ld, gyb, ld, 1, gyp.get());
            bf16::gemm_packed(ckk, ld, s.OC, wtp.get(), gyp.get(), cols.get(), ld, false);
            for (int64_t g = 0; g < G; ++g) conv2d_parts::from_columns(s, cols.get() + g * P, ld, gx + (n0 + g) * x_img);
        }
    });
    if (!gw && !gb) return;  // fp32's few-tap weight gradient made them
    if (gw) conv2d_parts::sum_partials(partial.get(), chunks, w_size);
    // gw (OC, CKK) from gW^T; gb from its partials in chunk order
    parallel_ranges(s.OC, w_size, 1, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) {
            if (gw)
                for (int64_t kk = 0; kk < ckk; ++kk) gw[o * ckk + kk] = partial[kk * s.OC + o];
            if (!gb) continue;
            gb[o] = partial_b[o];
            for (int64_t c = 1; c < chunks; ++c) gb[o] += partial_b[c * s.OC + o];
        }
    });
}

}  // namespace

bool conv2d_bf16_forward_runs_fp32(const Conv2dShape& s) {
    constexpr int64_t kFp32MostTaps = 9;  // see the top
    return winograd_mode() == WinogradMode::automatic &&
           static_cast<int64_t>(s.C) * s.KH * s.KW <= kFp32MostTaps;
}

void conv2d_forward_bf16(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
    require_bf16();
    if (no_products(s) || conv2d_bf16_forward_runs_fp32(s))
        conv2d_forward(s, x, w, bias, y);
    else
        forward_impl(s, x, w, bias, false, y, nullptr);
}

void conv2d_forward_bf16(const Conv2dShape& s, const float* x, const float* w, const float* bias,
                         const ConvOutputSink& sink) {
    require_bf16();
    if (no_products(s) || conv2d_bf16_forward_runs_fp32(s))
        conv2d_forward(s, x, w, bias, sink);
    else
        forward_impl(s, x, w, bias, false, nullptr, &sink);
}

void conv2d_forward_relu_bf16(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
    require_bf16();
    if (no_products(s) || conv2d_bf16_forward_runs_fp32(s))
        conv2d_forward_relu(s, x, w, bias, y);
    else
        forward_impl(s, x, w, bias, true, y, nullptr);
}

void conv2d_backward_bf16(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                          float* gx, float* gw, float* gb) {
    require_bf16();
    if (no_products(s) || fp32_sparse_backward(s, gy, nullptr))
        conv2d_backward(s, gy, x, w, gx, gw, gb);
    else
        backward_impl(s, gy, nullptr, x, w, gx, gw, gb);
}

void conv2d_backward_bf16(const Conv2dShape& s, const ConvGradSource& gy_source, const float* x, const float* w,
                          float* gx, float* gw, float* gb) {
    require_bf16();
    if (no_products(s) || fp32_sparse_backward(s, nullptr, &gy_source))
        conv2d_backward(s, gy_source, x, w, gx, gw, gb);
    else
        backward_impl(s, nullptr, &gy_source, x, w, gx, gw, gb);
}

}  // namespace deepkern::cpu
