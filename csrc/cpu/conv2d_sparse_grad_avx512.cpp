// The column gradient of a conv backward when most of the output gradient is zero (conv2d.hpp's
// column_grad_sparse_avx512), with AVX-512.
//
// Behind a 2x2 max-pool (and a ReLU) at most one output in four gets a gradient, so three in four
// of the dense product's multiply-adds add zeros. Here lanes run along the CKK taps of one pixel:
// for each channel o whose gradient at that pixel is not zero, the pixel's column (CKK floats)
// gains w[o, :] * gy[o, p], o in increasing order. That is exactly the GEMM's chain of fused
// multiply-adds for each output with the zero terms left out (for a finite w a zero's product is
// a signed zero, which adds nothing), so the bits are the GEMM's. 16 pixels' columns are then
// transposed into place, 16x16 at a time.
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
constexpr int kMostVectors = 24;  // taps per pass: 24 accumulators + a gradient + a weight vector in registers

// The pass over taps [k0, k0 + 16 V) of pixels [p0, p0 + np): columns (np, 16 V) into cols
template <int V>
void pixel_columns(int CKK, int OC, int k0, const float* w, const float* g_tile, const uint16_t* nonzero, int np,
                   float* cols) {
    const int left = CKK - k0 - kLanes * (V - 1);  // taps in the last vector, 1..16
    const __mmask16 last = static_cast<__mmask16>(left >= kLanes ? 0xFFFFu : (1u << left) - 1u);
    for (int l = 0; l < np; ++l) {
        __m512 acc[V];
#pragma GCC unroll 24
        for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
        for (int o = 0; o < OC; ++o) {
            if (!((nonzero[o] >> l) & 1u)) continue;
            const __m512 g = _mm512_set1_ps(g_tile[o * kLanes + l]);
            const float* wo = w + static_cast<int64_t>(o) * CKK + k0;
#pragma GCC unroll 24
            for (int v = 0; v < V; ++v) {
                const __m512 wv = v == V - 1 ? _mm512_maskz_loadu_ps(last, wo + kLanes * v) : _mm512_loadu_ps(wo + kLanes * v);
                acc[v] = _mm512_fmadd_ps(wv, g, acc[v]);  // the GEMM's w * g + sum
            }
        }
#pragma GCC unroll 24
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(cols + static_cast<int64_t>(l) * V * kLanes + kLanes * v, acc[v]);
    }
}

using PixelColumns = void (*)(int, int, int, const float*, const float*, const uint16_t*, int, float*);

template <int... V>
constexpr std::array<PixelColumns, sizeof...(V)> pixel_column_passes(std::integer_sequence<int, V...>) {
    return {&pixel_columns<V + 1>...};
}

}  // namespace

void column_grad_sparse_avx512(int CKK, int n, int OC, const float* w, const float* gy, int64_t ldg, float* dcols,
                               int64_t ldc) {
    constexpr auto passes = pixel_column_passes(std::make_integer_sequence<int, kMostVectors>{});
    std::vector<float> g_tile(static_cast<size_t>(OC) * kLanes);   // (OC, 16): the pixels' gradients
    std::vector<uint16_t> nonzero(OC);                              // per channel: which of the 16 are not 0
    std::vector<float> cols(static_cast<size_t>(kLanes) * kMostVectors * kLanes);  // (16, 16 V) pixel-major
    const __m512 zero = _mm512_setzero_ps();
    for (int p0 = 0; p0 < n; p0 += kLanes) {
        const int np = n - p0 < kLanes ? n - p0 : kLanes;
        const __mmask16 pm = static_cast<__mmask16>(np == kLanes ? 0xFFFFu : (1u << np) - 1u);
        for (int o = 0; o < OC; ++o) {
            const __m512 g = _mm512_maskz_loadu_ps(pm, gy + o * ldg + p0);
            _mm512_storeu_ps(g_tile.data() + o * kLanes, g);
            nonzero[o] = _mm512_mask_cmp_ps_mask(pm, g, zero, _CMP_NEQ_UQ);  // a NaN is not zero
        }
        for (int k0 = 0; k0 < CKK; k0 += kMostVectors * kLanes) {
            const int taps = CKK - k0 < kMostVectors * kLanes ? CKK - k0 : kMostVectors * kLanes;
            const int V = (taps + kLanes - 1) / kLanes;
            passes[V - 1](CKK, OC, k0, w, g_tile.data(), nonzero.data(), np, cols.data());
            for (int v = 0; v < V; ++v)  // (np, 16) of the pixel-major columns -> dcols rows k0 + 16 v
                simd::transpose16(cols.data() + kLanes * v, V * kLanes, taps - kLanes * v < kLanes ? taps - kLanes * v : kLanes,
                                  np, dcols + (k0 + kLanes * v) * ldc + p0, static_cast<int>(ldc));
        }
    }
}

}  // namespace deepkern::cpu::conv2d_isa
