// The sparse weight gradient's kernel in plain C++ (conv2d_sparse_wgrad.hpp's add_windows), compiled
// by conv2d_sparse_wgrad.cpp (generic x86-64) and conv2d_sparse_wgrad_avx2.cpp (AVX2). Each product is
// rounded and then added, in t order per element (FMA contraction off), so every build has the AVX-512
// kernel's bits.
#pragma once

#include <cstdint>

namespace deepkern::cpu::sparse_wgrad {
namespace {

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
// acc (KH, span) += value[t] * xt[at[t] + i * row + e] for t < count, row i < KH, e < span
void add_windows_plain(const int32_t* at, const float* value, int count, const float* xt, int64_t row, int KH,
                       int span, float* acc) {
    for (int i = 0; i < KH; ++i) {
        float* a = acc + static_cast<int64_t>(i) * span;
        for (int t = 0; t < count; ++t) {
            const float g = value[t];
            const float* src = xt + at[t] + i * row;
#pragma omp simd
            for (int e = 0; e < span; ++e) a[e] += g * src[e];
        }
    }
}
#pragma GCC pop_options

}  // namespace
}  // namespace deepkern::cpu::sparse_wgrad
