// A 16x16 block of floats transposed in registers (AVX-512), for the kernels that turn planes into
// channels-last copies and back (conv2d_winograd_wgrad_tiles.hpp, conv2d_sparse_grad_avx512.cpp).
// Include only from code compiled with the AVX-512 flags.
#pragma once

#ifdef __AVX512F__
#include <immintrin.h>

#include <cstdint>

namespace deepkern::cpu::simd {

// dst[p * C + c] = src[c * cs + p] for p < n <= 16, c < cn <= 16: a 16x16 block transposed in registers
inline void transpose16(const float* src, int64_t cs, int n, int cn, float* dst, int C) {
    const __mmask16 pm = static_cast<__mmask16>((1u << n) - 1u), cm = static_cast<__mmask16>((1u << cn) - 1u);
    __m512 r[16], t[16];
    // (loops fully unrolled, with constant indices only, so that r and t live in registers)
#pragma GCC unroll 16
    for (int c = 0; c < 16; ++c) r[c] = c < cn ? _mm512_maskz_loadu_ps(pm, src + c * cs) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {  // per 128-bit lane: pairs of rows interleaved
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {  // r[4j + k], lane L: rows 4j..4j+3 of column 4L + k
        r[4 * j] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
        r[4 * j + 1] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
        r[4 * j + 2] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
        r[4 * j + 3] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {  // column 4L + k gathers lane L of r[k], r[4 + k], r[8 + k], r[12 + k]
        const __m512 lo1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x44), lo2 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x44);
        const __m512 hi1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xEE), hi2 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xEE);
        t[k] = _mm512_shuffle_f32x4(lo1, lo2, 0x88);
        t[4 + k] = _mm512_shuffle_f32x4(lo1, lo2, 0xDD);
        t[8 + k] = _mm512_shuffle_f32x4(hi1, hi2, 0x88);
        t[12 + k] = _mm512_shuffle_f32x4(hi1, hi2, 0xDD);
    }
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p)
        if (p < n) _mm512_mask_storeu_ps(dst + static_cast<int64_t>(p) * C, cm, t[p]);
}

}  // namespace deepkern::cpu::simd
#endif
