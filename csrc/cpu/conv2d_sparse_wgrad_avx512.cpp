// The sparse weight gradient's kernel with AVX-512 (conv2d_sparse_wgrad.hpp): one row of the
// accumulator, up to 8 vectors of it, stays in registers while every listed non-zero adds its
// window row; each product is rounded and then added (vmulps, vaddps: no FMA), in list order, so
// the bits equal the generic build's. Each of the vectors is its own add chain (6 for the seed
// CNN's 3 x 32-channel rows), enough to cover the add latency.
// Compiled with -mavx512f/dq/bw/vl; conv2d_sparse_wgrad.cpp calls it only when the SIMD variant is avx512.
#include <immintrin.h>

#include <array>
#include <cstdint>
#include <utility>

#include "cpu/conv2d_sparse_wgrad.hpp"

// GCC would otherwise fuse the intrinsics' multiply and add into an FMA
#pragma GCC optimize("fp-contract=off")

namespace deepkern::cpu::sparse_wgrad {
namespace {

constexpr int kLanes = 16;
constexpr int kMostVectors = 8;

// a (16 V floats, the last vector's lanes `last`) += value[t] * src[at[t] + e] for t < count
template <int V>
void add_row(const int32_t* at, const float* value, int count, const float* src, __mmask16 last, float* a) {
    __m512 acc[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v)
        acc[v] = v == V - 1 ? _mm512_maskz_loadu_ps(last, a + kLanes * v) : _mm512_loadu_ps(a + kLanes * v);
    for (int t = 0; t < count; ++t) {
        const __m512 g = _mm512_set1_ps(value[t]);
        const float* s = src + at[t];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
            const __m512 xv = v == V - 1 ? _mm512_maskz_loadu_ps(last, s + kLanes * v) : _mm512_loadu_ps(s + kLanes * v);
            acc[v] = _mm512_add_ps(acc[v], _mm512_mul_ps(g, xv));
        }
    }
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
        if (v == V - 1)
            _mm512_mask_storeu_ps(a + kLanes * v, last, acc[v]);
        else
            _mm512_storeu_ps(a + kLanes * v, acc[v]);
    }
}

using AddRow = void (*)(const int32_t*, const float*, int, const float*, __mmask16, float*);

template <int... V>
constexpr std::array<AddRow, sizeof...(V)> add_rows(std::integer_sequence<int, V...>) {
    return {&add_row<V + 1>...};
}

}  // namespace

// acc is (KH, span); row i of each window starts at xt + at[t] + i * row
void add_windows_avx512(const int32_t* at, const float* value, int count, const float* xt, int64_t row, int KH,
                        int span, float* acc) {
    constexpr auto rows = add_rows(std::make_integer_sequence<int, kMostVectors>{});
    if (count == 0) return;
    for (int i = 0; i < KH; ++i)
        for (int e0 = 0; e0 < span; e0 += kMostVectors * kLanes) {
            const int n = span - e0 < kMostVectors * kLanes ? span - e0 : kMostVectors * kLanes;
            const int V = (n + kLanes - 1) / kLanes, left = n - kLanes * (V - 1);
            const __mmask16 last = static_cast<__mmask16>(left >= kLanes ? 0xFFFFu : (1u << left) - 1u);
            rows[V - 1](at, value, count, xt + i * row + e0, last, acc + static_cast<int64_t>(i) * span + e0);
        }
}

}  // namespace deepkern::cpu::sparse_wgrad
