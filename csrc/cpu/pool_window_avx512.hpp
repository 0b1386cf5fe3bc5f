// The 2x2 max-pool window logic shared by the AVX-512 kernels that pool (pool_avx512.cpp, and
// conv2d_small_avx512.cpp, which pools its conv outputs in registers): each lane holds one
// window's four taps. Include only from files compiled with the AVX-512 flags (*_avx512.cpp).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/pool.hpp"

namespace deepkern::cpu::pool_isa {

// The four taps of 16 windows, row-major in each window: a b / c d
struct Taps {
    __m512 a, b, c, d;
};

// Windows holding a NaN
inline __mmask16 nan_windows(const Taps& t) {
    return _mm512_cmp_ps_mask(t.a, t.b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(t.c, t.d, _CMP_UNORD_Q);
}

// A NaN window's value: the sum of its taps (as pool.cpp's max2x2_plane)
inline __m512 nan_value(const Taps& t) { return _mm512_add_ps(_mm512_add_ps(t.a, t.b), _mm512_add_ps(t.c, t.d)); }

// Each window's maximum and the tap (0 a, 1 b, 2 c, 3 d) of its first maximum
struct FirstMax {
    __m512 value;
    __m512i at;
};
inline FirstMax first_max(const Taps& t) {
    const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2), three = _mm512_set1_epi32(3);
    const __mmask16 b_wins = _mm512_cmp_ps_mask(t.b, t.a, _CMP_GT_OQ);
    const __mmask16 d_wins = _mm512_cmp_ps_mask(t.d, t.c, _CMP_GT_OQ);
    const __m512 top = _mm512_mask_mov_ps(t.a, b_wins, t.b), bottom = _mm512_mask_mov_ps(t.c, d_wins, t.d);
    const __mmask16 bottom_wins = _mm512_cmp_ps_mask(bottom, top, _CMP_GT_OQ);
    FirstMax m{_mm512_mask_mov_ps(top, bottom_wins, bottom),
               _mm512_mask_mov_epi32(_mm512_maskz_mov_epi32(b_wins, one), bottom_wins,
                                     _mm512_mask_mov_epi32(two, d_wins, three))};
    const __mmask16 nan = nan_windows(t);
    if (nan) {  // the first NaN tap is the maximum
        __m512i first = three;
        first = _mm512_mask_mov_epi32(first, _mm512_cmp_ps_mask(t.c, t.c, _CMP_UNORD_Q), two);
        first = _mm512_mask_mov_epi32(first, _mm512_cmp_ps_mask(t.b, t.b, _CMP_UNORD_Q), one);
        first = _mm512_mask_mov_epi32(first, _mm512_cmp_ps_mask(t.a, t.a, _CMP_UNORD_Q), _mm512_setzero_si512());
        m.at = _mm512_mask_mov_epi32(m.at, nan, first);
        m.value = _mm512_mask_mov_ps(m.value, nan, nan_value(t));
    }
    return m;
}

// The fused ReLU + pool's outputs of the windows under mask (pool.hpp's max2x2_relu_plane): y the
// maximum through the ReLU (values not less than 0 stay, NaN and -0 included) and route its tap
// where it is > 0 (the gradient passes), else kNoRoute
inline void store_relu_max(const FirstMax& m, float* y, uint8_t* route, __mmask16 mask) {
    const __m512 zero = _mm512_setzero_ps();
    const __m512 out = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m.value, zero, _CMP_NLT_UQ), m.value);
    const __m512i to = _mm512_mask_mov_epi32(_mm512_set1_epi32(kNoRoute), _mm512_cmp_ps_mask(m.value, zero, _CMP_GT_OQ),
                                             m.at);
    _mm512_mask_storeu_ps(y, mask, out);
    _mm_mask_storeu_epi8(route, mask, _mm512_cvtepi32_epi8(to));
}

}  // namespace deepkern::cpu::pool_isa
