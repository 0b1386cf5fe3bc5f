// The column gradient of a conv backward when most of the output gradient is zero (conv2d.hpp's
// column_grad_sparse_avx512), with AVX-512.
//
// Behind a 2x2 max-pool (and a ReLU) at most one output in four gets a gradient, so three in four
// of the dense product's multiply-adds add zeros. Here lanes run along the CKK taps of one pixel:
// for each channel o whose gradient at that pixel is not zero, the pixel's column (CKK floats)
// gains w[o, :] * gy[o, p], o in increasing order. That is exactly the GEMM's chain of fused
// multiply-adds for each output with the zero terms left out (for a finite w a zero's product is
// a signed zero, which adds nothing), so the bits are the GEMM's. Each block of 16 pixels first
// lists, per pixel, its non-zero channels and their gradients (compressed from a transposed copy,
// no branch per channel: a branch on a random ~20% bit mispredicts often enough to cost as much as
// the products); the pixels' columns are then computed from the lists and transposed into place,
// 16x16 at a time.
// Compiled with -mavx512f/dq/bw/vl; conv2d.cpp calls it only when the SIMD variant is avx512.
#include <immintrin.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/conv2d.hpp"
#include "cpu/transpose16_avx512.hpp"

namespace deepkern::cpu::conv2d_isa {
namespace {

constexpr int kLanes = 16;
constexpr int kMostVectors = 24;  // taps per pass: accumulators + a gradient + a weight vector in registers

// Per-pixel lists of non-zero gradients: pixel l has count[l] channels, in increasing order,
// channel chan[l * stride + t] with gradient grad[l * stride + t]
struct ListsView {
    const int32_t* chan;
    const float* grad;
    const int32_t* count;
    int64_t stride;

    ListsView from(int p0) const { return {chan + p0 * stride, grad + p0 * stride, count + p0, stride}; }
};

// The lists of a block of up to 16 pixels, built from a dense gradient
struct BlockLists {
    int stride;  // OC rounded up to 16
    std::vector<float> g_t;      // (16, stride): the block's gradients, pixel-major
    std::vector<int32_t> chan;   // (16, stride)
    std::vector<float> grad;     // (16, stride)
    int32_t count[kLanes];

    explicit BlockLists(int OC)
        : stride((OC + kLanes - 1) / kLanes * kLanes), g_t(static_cast<size_t>(kLanes) * stride),
          chan(static_cast<size_t>(kLanes) * stride), grad(static_cast<size_t>(kLanes) * stride) {}

    ListsView view() const { return {chan.data(), grad.data(), count, stride}; }

    // pixels [p0, p0 + np) of gy (OC rows, row stride ldg); no branch per channel
    void build(int OC, const float* gy, int64_t ldg, int p0, int np) {
        for (int o0 = 0; o0 < OC; o0 += kLanes)  // g_t[l, o] = gy[o, p0 + l]
            simd::transpose16(gy + o0 * ldg + p0, ldg, np, OC - o0 < kLanes ? OC - o0 : kLanes, g_t.data() + o0, stride);
        const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        const __m512 zero = _mm512_setzero_ps();
        for (int l = 0; l < np; ++l) {
            int n = 0;
            for (int o0 = 0; o0 < OC; o0 += kLanes) {
                const int left = OC - o0;
                const __mmask16 valid = static_cast<__mmask16>(left >= kLanes ? 0xFFFFu : (1u << left) - 1u);
                const __m512 g = _mm512_maskz_loadu_ps(valid, g_t.data() + l * stride + o0);
                const __mmask16 nz = _mm512_mask_cmp_ps_mask(valid, g, zero, _CMP_NEQ_UQ);  // a NaN is not zero
                // packed to the front in channel order; whole-vector stores (the lists have room)
                _mm512_storeu_ps(grad.data() + l * stride + n, _mm512_maskz_compress_ps(nz, g));
                _mm512_storeu_si512(chan.data() + l * stride + n,
                                    _mm512_maskz_compress_epi32(nz, _mm512_add_epi32(lane, _mm512_set1_epi32(o0))));
                n += __builtin_popcount(nz);
            }
            count[l] = n;
        }
    }
};

// The pass over taps [k0, k0 + 16 V) of the listed pixels: columns (np, 16 V) into cols
template <int V>
void pixel_columns(int CKK, int k0, const float* w, const ListsView& lists, int np, float* cols) {
    const int left = CKK - k0 - kLanes * (V - 1);  // taps in the last vector, 1..16
    const __mmask16 last = static_cast<__mmask16>(left >= kLanes ? 0xFFFFu : (1u << left) - 1u);
    for (int l = 0; l < np; ++l) {
        const int32_t* chan = lists.chan + l * lists.stride;
        const float* grad = lists.grad + l * lists.stride;
        __m512 acc[V];
#pragma GCC unroll 24
        for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
        const int count = lists.count[l];
        for (int t = 0; t < count; ++t) {
            const __m512 g = _mm512_set1_ps(grad[t]);
            const float* wo = w + static_cast<int64_t>(chan[t]) * CKK + k0;
            // the row after next: its channel is random, which the hardware prefetcher cannot guess
            const float* ahead = w + static_cast<int64_t>(chan[t + 2 < count ? t + 2 : t]) * CKK + k0;
#pragma GCC unroll 24
            for (int v = 0; v < V; ++v) {
                _mm_prefetch(reinterpret_cast<const char*>(ahead + kLanes * v), _MM_HINT_T0);
                const __m512 wv = v == V - 1 ? _mm512_maskz_loadu_ps(last, wo + kLanes * v) : _mm512_loadu_ps(wo + kLanes * v);
                acc[v] = _mm512_fmadd_ps(wv, g, acc[v]);  // the GEMM's w * g + sum
            }
        }
#pragma GCC unroll 24
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(cols + static_cast<int64_t>(l) * V * kLanes + kLanes * v, acc[v]);
    }
}

using PixelColumns = void (*)(int, int, const float*, const ListsView&, int, float*);

template <int... V>
constexpr std::array<PixelColumns, sizeof...(V)> pixel_column_passes(std::integer_sequence<int, V...>) {
    return {&pixel_columns<V + 1>...};
}

// dcols columns [p0, p0 + np) (CKK rows, row stride ldc) from the block's lists; cols is scratch
// (16, 16 kMostVectors)
void block_columns(int CKK, const float* w, const ListsView& lists, int p0, int np, float* cols, float* dcols,
                   int64_t ldc) {
    constexpr auto passes = pixel_column_passes(std::make_integer_sequence<int, kMostVectors>{});
    for (int k0 = 0; k0 < CKK; k0 += kMostVectors * kLanes) {
        const int taps = CKK - k0 < kMostVectors * kLanes ? CKK - k0 : kMostVectors * kLanes;
        const int V = (taps + kLanes - 1) / kLanes;
        passes[V - 1](CKK, k0, w, lists, np, cols);
        for (int v = 0; v < V; ++v)  // (np, 16) of the pixel-major columns -> dcols rows k0 + 16 v
            simd::transpose16(cols + kLanes * v, V * kLanes, taps - kLanes * v < kLanes ? taps - kLanes * v : kLanes, np,
                              dcols + (k0 + kLanes * v) * ldc + p0, static_cast<int>(ldc));
    }
}

}  // namespace

// dcols (CKK, n), row stride ldc, = w^T (CKK, OC) @ gy (OC, n), row stride ldg, w (OC, CKK)
void column_grad_sparse_avx512(int CKK, int n, int OC, const float* w, const float* gy, int64_t ldg, float* dcols,
                               int64_t ldc) {
    BlockLists lists(OC);
    std::vector<float> cols(static_cast<size_t>(kLanes) * kMostVectors * kLanes);  // (16, 16 V) pixel-major
    for (int p0 = 0; p0 < n; p0 += kLanes) {
        const int np = n - p0 < kLanes ? n - p0 : kLanes;
        lists.build(OC, gy, ldg, p0, np);
        block_columns(CKK, w, lists.view(), p0, np, cols.data(), dcols, ldc);
    }
}

// dcols (CKK, n) as above, the gradient given as lists: pixel p's count[p] channels chan[p * stride + t]
// (increasing) with values grad[p * stride + t]
void column_grad_lists_avx512(int CKK, int n, const float* w, const int32_t* chan, const float* grad,
                              const int32_t* count, int64_t stride, float* dcols, int64_t ldc) {
    const ListsView lists{chan, grad, count, stride};
    std::vector<float> cols(static_cast<size_t>(kLanes) * kMostVectors * kLanes);
    for (int p0 = 0; p0 < n; p0 += kLanes)
        block_columns(CKK, w, lists.from(p0), p0, n - p0 < kLanes ? n - p0 : kLanes, cols.data(), dcols, ldc);
}

}  // namespace deepkern::cpu::conv2d_isa
