// The AVX512-BF16 part of the bf16 GEMM (gemm_bf16.hpp): packing with fp32 -> bf16 rounding and
// the 14x32 micro-kernel. Built with -mavx512bf16; gemm_bf16.cpp calls it only on CPUs that have it.
#include <immintrin.h>

#include <cstring>

#include "cpu/gemm_bf16.hpp"

namespace deepkern::cpu::bf16 {
namespace {

// fp32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. Same rule as vcvtne2ps2bf16.
inline uint32_t round_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

inline __m512i pairs_of(__m512 lo_k, __m512 hi_k) {   // 16 lanes: bf16(lo) | bf16(hi) << 16
    const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo_k));
    const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi_k));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

template <int M>
void tile_m(int64_t kp, const uint32_t* a, const uint32_t* b, float* C, int64_t ldc, int n,
            bool accumulate, const Finish* fin) {
    __m512 c0[M], c1[M];
    for (int r = 0; r < M; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kp; ++p) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * NR + 16);
        for (int r = 0; r < M; ++r) {
            const __m512bh ar = (__m512bh)_mm512_set1_epi32((int)a[p * MR + r]);
            c0[r] = _mm512_dpbf16_ps(c0[r], ar, b0);
            c1[r] = _mm512_dpbf16_ps(c1[r], ar, b1);
        }
    }
    const __mmask16 k0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    const __mmask16 k1 = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (fin && fin->bias) {
        bias0 = _mm512_maskz_loadu_ps(k0, fin->bias);
        bias1 = _mm512_maskz_loadu_ps(k1, fin->bias + 16);
    }
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < M; ++r) {
        float* row = C + r * ldc;
        if (accumulate) {
            c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(k0, row));
            c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(k1, row + 16));
        }
        if (fin) {   // the last k block: + bias, then ReLU
            c0[r] = _mm512_add_ps(c0[r], bias0);
            c1[r] = _mm512_add_ps(c1[r], bias1);
            if (fin->relu) {
                c0[r] = _mm512_max_ps(c0[r], zero);
                c1[r] = _mm512_max_ps(c1[r], zero);
            }
        }
        _mm512_mask_storeu_ps(row, k0, c0[r]);
        _mm512_mask_storeu_ps(row + 16, k1, c1[r]);
    }
}

using TileFn = void (*)(int64_t, const uint32_t*, const uint32_t*, float*, int64_t, int, bool, const Finish*);
constexpr TileFn kTiles[MR + 1] = {nullptr,     tile_m<1>,  tile_m<2>,  tile_m<3>,  tile_m<4>,
                                   tile_m<5>,   tile_m<6>,  tile_m<7>,  tile_m<8>,  tile_m<9>,
                                   tile_m<10>,  tile_m<11>, tile_m<12>, tile_m<13>, tile_m<14>};

}  // namespace

void tile(int64_t kp, const uint32_t* a, const uint32_t* b, float* C, int64_t ldc, int m, int n, bool accumulate,
          const Finish* finish) {
    kTiles[m](kp, a, b, C, ldc, n, accumulate, finish);
}

void pack_a(const float* A, int64_t a_rs, int64_t a_cs, int64_t rows, int64_t K, uint32_t* out, uint32_t* row_tmp) {
    const int64_t Kp = (K + 1) / 2;
    for (int64_t r = 0; r < rows; ++r) {
        const float* src = A + r * a_rs;
        int64_t p = 0;
        if (a_cs == 1) {   // 32 consecutive k -> 16 pairs, in order
            for (; 2 * p + 32 <= K; p += 16) {
                const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 2 * p + 16), _mm512_loadu_ps(src + 2 * p));
                _mm512_storeu_si512(row_tmp + p, (__m512i)v);
            }
        }
        for (; p < Kp; ++p) {
            const uint32_t lo = round_bf16(src[2 * p * a_cs]);
            const uint32_t hi = 2 * p + 1 < K ? round_bf16(src[(2 * p + 1) * a_cs]) : 0u;
            row_tmp[p] = lo | hi << 16;
        }
        for (p = 0; p < Kp; ++p) out[p * MR + r] = row_tmp[p];
    }
}

void pack_b(const float* B, int64_t b_rs, int64_t b_cs, int64_t K, int64_t cols, uint32_t* out) {
    const int64_t Kp = (K + 1) / 2;
    for (int64_t p = 0; p < Kp; ++p) {
        const float* r0 = B + 2 * p * b_rs;
        const bool has_hi = 2 * p + 1 < K;
        uint32_t* dst = out + p * NR;
        if (b_cs == 1) {   // rows 2p and 2p+1, 16 columns at a time, masked at the panel's edge
            for (int j = 0; j < NR; j += 16) {
                const int64_t left = cols - j;
                const __mmask16 k = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
                const __m512 lo = _mm512_maskz_loadu_ps(k, r0 + j);
                const __m512 hi = has_hi ? _mm512_maskz_loadu_ps(k, r0 + b_rs + j) : _mm512_setzero_ps();
                _mm512_storeu_si512(dst + j, pairs_of(lo, hi));
            }
            continue;
        }
        for (int j = 0; j < NR; ++j) {
            if (j >= cols) { dst[j] = 0; continue; }
            const uint32_t lo = round_bf16(r0[j * b_cs]);
            const uint32_t hi = has_hi ? round_bf16(r0[b_rs + j * b_cs]) : 0u;
            dst[j] = lo | hi << 16;
        }
    }
}

}  // namespace deepkern::cpu::bf16
