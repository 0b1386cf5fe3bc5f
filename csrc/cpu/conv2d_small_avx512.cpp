// The direct conv + bias + ReLU + 2x2 max-pool of few-tap layers (conv2d_small.hpp) with AVX-512.
//
// Lanes run along a pooled row: lane l of a step is window pw0 + l, whose four conv outputs are
// (2ph + dy, 2(pw0 + l) + dx). For tap (c, i, j) that output reads the padded image at column
// 2(pw0 + l) + dx + j: in the plane of columns with parity (dx + j) % 2 it is element
// pw0 + l + (dx + j) / 2, so each (window tap, conv tap) pair is one contiguous 16-float load
// (SmallConvRows::offsets).
// A step keeps 4 window taps x NO channels of accumulators (16 zmm at NO = 4); per conv tap it
// loads 4 vectors and NO weight broadcasts for 4 * NO FMAs, so the FMAs bound it.
// The weight gradient's lanes run along output rows: per 16 output pixels of a row, NO channels'
// gradients and one x vector per tap (TB taps) give NO * TB FMAs into register accumulators
// that persist over the whole image.
// Compiled with -mavx512f/dq/bw/vl; conv2d_small.cpp calls these only when the SIMD variant is avx512.
#include <immintrin.h>

#include <array>
#include <utility>

#include "cpu/conv2d_small.hpp"
#include "cpu/pool_window_avx512.hpp"

namespace deepkern::cpu::conv2d_isa {
namespace {

constexpr int kLanes = 16;

// Windows [pw0, pw0 + 16) of pooled row ph for output channels [o0, o0 + NO); mask: the windows < PW
template <int NO>
void window_step(const SmallConvRows& a, int ph, int pw0, __mmask16 mask, int o0) {
    const int taps = a.C * a.KH * a.KW;
    const float* base = a.planes + 2 * ph * a.U + pw0;
    __m512 acc[4][NO];  // [window tap dy * 2 + dx][channel]
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
#pragma GCC unroll 4
        for (int o = 0; o < NO; ++o) acc[k][o] = _mm512_setzero_ps();
    for (int t = 0; t < taps; ++t) {
        __m512 wv[NO];
#pragma GCC unroll 4
        for (int o = 0; o < NO; ++o) wv[o] = _mm512_set1_ps(a.w[(o0 + o) * taps + t]);
        const int64_t* off = a.offsets + 4 * t;
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
            const __m512 xv = _mm512_loadu_ps(base + off[k]);
            // the GEMM's order: w * x + sum, taps in order, the bias after them
#pragma GCC unroll 4
            for (int o = 0; o < NO; ++o) acc[k][o] = _mm512_fmadd_ps(wv[o], xv, acc[k][o]);
        }
    }
    const int64_t out_plane = static_cast<int64_t>(a.PH) * a.PW;
#pragma GCC unroll 4
    for (int o = 0; o < NO; ++o) {
        pool_isa::Taps win{acc[0][o], acc[1][o], acc[2][o], acc[3][o]};
        if (a.bias) {  // no bias: nothing added (adding 0 would turn a -0 sum into +0)
            const __m512 b = _mm512_set1_ps(a.bias[o0 + o]);
            win = {_mm512_add_ps(win.a, b), _mm512_add_ps(win.b, b), _mm512_add_ps(win.c, b), _mm512_add_ps(win.d, b)};
        }
        const int64_t at = (o0 + o) * out_plane + static_cast<int64_t>(ph) * a.PW + pw0;
        pool_isa::store_relu_max(pool_isa::first_max(win), a.y + at, a.route + at, mask);
    }
}

// lanes[o][t] (+)= per-lane sums of gy[o] * x shifted by tap t, for channels [o0, o0 + NO) and
// taps [t0, t0 + TB); bias_lanes (+)= gy when given (with the first tap block only)
template <int NO, int TB, bool Pairs>
void weight_grad_block(const SmallWeightGradImage& a, int o0, int t0) {
    const int64_t ohw = static_cast<int64_t>(a.OH) * a.OW;
    const bool with_bias = a.bias_lanes && t0 == 0;  // the bias sums go with the first tap block
    __m512 acc[NO][TB], bacc[NO];  // the running lane sums, in registers while this image's products add up
#pragma GCC unroll 2
    for (int o = 0; o < NO; ++o) {
#pragma GCC unroll 9
        for (int t = 0; t < TB; ++t) acc[o][t] = _mm512_loadu_ps(a.lanes + ((o0 + o) * a.taps + t0 + t) * kLanes);
        bacc[o] = with_bias ? _mm512_loadu_ps(a.bias_lanes + (o0 + o) * kLanes) : _mm512_setzero_ps();
    }
    const int64_t* off = a.offsets + t0;
    // Rows (Pairs: pairs of rows) outside, then the columns, then the pair's two rows: a lane (which
    // every column block shares) gets each pair's products column block by column block, the order
    // the routed kernel below keeps while it leaves out the zeros (one non-zero per pair and column).
    // Pairs wherever the routed kernel may run (a layer of at most kTapBlock taps); single rows
    // otherwise, ~15% faster on large images (150x150 network's 27-tap layer).
    // one output row's 16 columns from c0 (mask: those inside the row)
    auto add_row = [&](int y, int c0, __mmask16 mask) {
        __m512 g[NO];
#pragma GCC unroll 2
        for (int o = 0; o < NO; ++o) {
            g[o] = _mm512_maskz_loadu_ps(mask, a.gy + (o0 + o) * ohw + static_cast<int64_t>(y) * a.OW + c0);
            if (with_bias) bacc[o] = _mm512_add_ps(bacc[o], g[o]);
        }
        const float* base = a.xp + y * a.Wp + c0;
#pragma GCC unroll 9
        for (int t = 0; t < TB; ++t) {
            const __m512 xv = _mm512_maskz_loadu_ps(mask, base + off[t]);
#pragma GCC unroll 2
            for (int o = 0; o < NO; ++o) acc[o][t] = _mm512_fmadd_ps(g[o], xv, acc[o][t]);
        }
    };
    auto column_mask = [&](int c0) {
        const int n = a.OW - c0 < kLanes ? a.OW - c0 : kLanes;
        return static_cast<__mmask16>(n == kLanes ? 0xFFFFu : (1u << n) - 1u);
    };
    if constexpr (Pairs) {
        for (int y0 = 0; y0 < a.OH; y0 += 2)
            for (int c0 = 0; c0 < a.OW; c0 += kLanes) {
                add_row(y0, c0, column_mask(c0));
                if (y0 + 1 < a.OH) add_row(y0 + 1, c0, column_mask(c0));
            }
    } else {
        for (int y = 0; y < a.OH; ++y)
            for (int c0 = 0; c0 < a.OW; c0 += kLanes) add_row(y, c0, column_mask(c0));
    }
#pragma GCC unroll 2
    for (int o = 0; o < NO; ++o) {
#pragma GCC unroll 9
        for (int t = 0; t < TB; ++t) _mm512_storeu_ps(a.lanes + ((o0 + o) * a.taps + t0 + t) * kLanes, acc[o][t]);
        if (with_bias) _mm512_storeu_ps(a.bias_lanes + (o0 + o) * kLanes, bacc[o]);
    }
}

// The same sums behind a 2x2 max-pool, from the pooled gradient and its routes (a.route): per pair
// of output rows 2ph, 2ph + 1 and 16 columns c0 + l (8 windows, two lanes each), lane l's one
// possibly non-zero gradient is its window's pooled gradient where the route picks column parity
// l % 2 (and any tap at all: kNoRoute passes none), multiplied with x of the row the route picks.
// Per pair of rows: NO gradients, 2 x vectors per tap, NO blends and NO FMAs per tap (the dense
// kernel: 2 x vectors and 2 * NO FMAs). Rows and columns the pool leaves out get no gradient.
template <int NO, int TB>
void routed_weight_grad_block(const SmallWeightGradImage& a, int o0, int t0) {
    const int PH = a.OH / 2, PW = a.OW / 2;
    const int64_t plane = static_cast<int64_t>(PH) * PW;
    const bool with_bias = a.bias_lanes && t0 == 0;  // the bias sums go with the first tap block
    const __m512i pair = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);  // lane -> window
    const __m512i parity = _mm512_set_epi32(1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
    const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2);
    const __m512i no_route = _mm512_set1_epi32(kNoRoute);
    // the running lane sums, loaded and stored as in weight_grad_block (a struct shared by the two
    // kernels measured 10-15% slower on the 150x150 network's first layer: its sums left the registers)
    __m512 acc[NO][TB], bacc[NO];
#pragma GCC unroll 2
    for (int o = 0; o < NO; ++o) {
#pragma GCC unroll 9
        for (int t = 0; t < TB; ++t) acc[o][t] = _mm512_loadu_ps(a.lanes + ((o0 + o) * a.taps + t0 + t) * kLanes);
        bacc[o] = with_bias ? _mm512_loadu_ps(a.bias_lanes + (o0 + o) * kLanes) : _mm512_setzero_ps();
    }
    const int64_t* off = a.offsets + t0;
    for (int ph = 0; ph < PH; ++ph) {  // pairs of rows outside, as the dense kernel above
        for (int w0 = 0; w0 < PW; w0 += kLanes / 2) {  // windows [w0, w0 + 8): columns [2 w0, 2 w0 + 16)
            const int nw = PW - w0 < kLanes / 2 ? PW - w0 : kLanes / 2;
            const __mmask16 windows = static_cast<__mmask16>((1u << nw) - 1u);
            const __mmask16 lanes = static_cast<__mmask16>((1u << (2 * nw)) - 1u);
            __m512 g[NO];
            __mmask16 lower[NO];  // lanes whose gradient is in row 2ph + 1
#pragma GCC unroll 2
            for (int o = 0; o < NO; ++o) {
                const int64_t at = (o0 + o) * plane + static_cast<int64_t>(ph) * PW + w0;
                const __m512 gw = _mm512_permutexvar_ps(pair, _mm512_maskz_loadu_ps(windows, a.gy + at));
                const __m512i to = _mm512_permutexvar_epi32(
                    pair, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(windows, a.route + at)));
                const __mmask16 passes = _mm512_mask_cmpneq_epi32_mask(
                    _mm512_cmpeq_epi32_mask(_mm512_and_si512(to, one), parity), to, no_route);
                g[o] = _mm512_maskz_mov_ps(passes & lanes, gw);
                lower[o] = _mm512_test_epi32_mask(to, two);
                if (with_bias) bacc[o] = _mm512_add_ps(bacc[o], g[o]);
            }
            const float* upper_row = a.xp + 2 * ph * a.Wp + 2 * w0;
#pragma GCC unroll 9
            for (int t = 0; t < TB; ++t) {
                const __m512 xu = _mm512_maskz_loadu_ps(lanes, upper_row + off[t]);
                const __m512 xl = _mm512_maskz_loadu_ps(lanes, upper_row + a.Wp + off[t]);
#pragma GCC unroll 2
                for (int o = 0; o < NO; ++o)
                    acc[o][t] = _mm512_fmadd_ps(g[o], _mm512_mask_blend_ps(lower[o], xu, xl), acc[o][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int o = 0; o < NO; ++o) {
#pragma GCC unroll 9
        for (int t = 0; t < TB; ++t) _mm512_storeu_ps(a.lanes + ((o0 + o) * a.taps + t0 + t) * kLanes, acc[o][t]);
        if (with_bias) _mm512_storeu_ps(a.bias_lanes + (o0 + o) * kLanes, bacc[o]);
    }
}

constexpr int kTapBlock = 9;  // taps per pass: 2 x 9 accumulators, 2 gradients and an x vector in registers
using WeightGradBlock = void (*)(const SmallWeightGradImage&, int, int);

enum class GradKernel { rows, row_pairs, routed };

template <int NO, GradKernel K, int... TB>
constexpr std::array<WeightGradBlock, sizeof...(TB)> weight_grad_blocks(std::integer_sequence<int, TB...>) {
    if constexpr (K == GradKernel::routed)
        return {&routed_weight_grad_block<NO, TB + 1>...};
    else
        return {&weight_grad_block<NO, TB + 1, K == GradKernel::row_pairs>...};
}

}  // namespace

void small_weight_grad_image_avx512(const SmallWeightGradImage& a) {
    constexpr auto taps = std::make_integer_sequence<int, kTapBlock>{};
    constexpr auto two_rows = weight_grad_blocks<2, GradKernel::rows>(taps);
    constexpr auto one_rows = weight_grad_blocks<1, GradKernel::rows>(taps);
    constexpr auto two_pairs = weight_grad_blocks<2, GradKernel::row_pairs>(taps);
    constexpr auto one_pairs = weight_grad_blocks<1, GradKernel::row_pairs>(taps);
    constexpr auto two_routed = weight_grad_blocks<2, GradKernel::routed>(taps);
    constexpr auto one_routed = weight_grad_blocks<1, GradKernel::routed>(taps);
    // the routed kernel's sums are the row pairs' (the driver routes only layers of one tap block)
    const bool pairs = a.taps <= kTapBlock;
    const auto& two = a.route ? two_routed : pairs ? two_pairs : two_rows;
    const auto& one = a.route ? one_routed : pairs ? one_pairs : one_rows;
    for (int t0 = 0; t0 < a.taps; t0 += kTapBlock) {
        const int tb = a.taps - t0 < kTapBlock ? a.taps - t0 : kTapBlock;
        int o0 = 0;
        for (; o0 + 2 <= a.OC; o0 += 2) two[tb - 1](a, o0, t0);
        if (o0 < a.OC) one[tb - 1](a, o0, t0);
    }
}

void small_relu_pool_rows_avx512(const SmallConvRows& a, int ph0, int ph1) {
    constexpr int kBlock = 4;  // output channels per step
    for (int ph = ph0; ph < ph1; ++ph)
        for (int pw0 = 0; pw0 < a.PW; pw0 += kLanes) {
            const int n = a.PW - pw0 < kLanes ? a.PW - pw0 : kLanes;
            const __mmask16 mask = static_cast<__mmask16>(n == kLanes ? 0xFFFFu : (1u << n) - 1u);
            int o0 = 0;
            for (; o0 + kBlock <= a.OC; o0 += kBlock) window_step<kBlock>(a, ph, pw0, mask, o0);
            switch (a.OC - o0) {
                case 3: window_step<3>(a, ph, pw0, mask, o0); break;
                case 2: window_step<2>(a, ph, pw0, mask, o0); break;
                case 1: window_step<1>(a, ph, pw0, mask, o0); break;
                default: break;
            }
        }
}

}  // namespace deepkern::cpu::conv2d_isa
