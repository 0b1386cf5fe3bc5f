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
    // every loop over the rows unrolled: the 28 accumulators then stay in registers (as loops, GCC
    // kept them in a stack array zeroed and stored row by row: twice the time of a short-K tile)
    __m512 c0[M], c1[M];
    #pragma GCC unroll 14
    for (int r = 0; r < M; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kp; ++p) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * NR + 16);
        #pragma GCC unroll 14
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
    #pragma GCC unroll 14
    for (int r = 0; r < M; ++r) {
        float* row = C + r * ldc;
        if (accumulate) {
            c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(k0, row));
            c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(k1, row + 16));
        }
        if (fin) {   // the last k block: + bias (per column, per row), then ReLU
            c0[r] = _mm512_add_ps(c0[r], bias0);
            c1[r] = _mm512_add_ps(c1[r], bias1);
            if (fin->bias_row) {
                const __m512 br = _mm512_set1_ps(fin->bias_row[r]);
                c0[r] = _mm512_add_ps(c0[r], br);
                c1[r] = _mm512_add_ps(c1[r], br);
            }
            if (fin->relu) {   // max(0, c) returns its second operand when one is NaN: NaN stays
                c0[r] = _mm512_max_ps(zero, c0[r]);
                c1[r] = _mm512_max_ps(zero, c1[r]);
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

namespace {

// row_tmp[p] = bf16(src[2p * cs]) | bf16(src[(2p+1) * cs]) << 16 for p < ceil(K/2) (the odd k past K zero)
void row_pairs(const float* src, int64_t cs, int64_t K, uint32_t* row_tmp) {
    const int64_t Kp = (K + 1) / 2;
    int64_t p = 0;
    if (cs == 1) {   // 32 consecutive k -> 16 pairs, in order
        for (; 2 * p + 32 <= K; p += 16) {
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 2 * p + 16), _mm512_loadu_ps(src + 2 * p));
            _mm512_storeu_si512(row_tmp + p, (__m512i)v);
        }
    }
    for (; p < Kp; ++p) {
        const uint32_t lo = round_bf16(src[2 * p * cs]);
        const uint32_t hi = 2 * p + 1 < K ? round_bf16(src[(2 * p + 1) * cs]) : 0u;
        row_tmp[p] = lo | hi << 16;
    }
}

// t[j] = column j of the 16 x 16 matrix of 32-bit elements whose rows are a[0..15]:
// 32-bit then 64-bit interleaves within 128-bit lanes, then a 4 x 4 transpose of the lanes.
inline void transpose16(const __m512i a[16], __m512i t[16]) {
    __m512i b[16], c[16];
    for (int i = 0; i < 16; i += 2) {
        b[i] = _mm512_unpacklo_epi32(a[i], a[i + 1]);       // lane L: a_i[4L], a_i+1[4L], a_i[4L+1], a_i+1[4L+1]
        b[i + 1] = _mm512_unpackhi_epi32(a[i], a[i + 1]);   // the same at 4L+2, 4L+3
    }
    for (int g = 0; g < 4; ++g) {   // c[4g + m], lane L: rows 4g..4g+3 at column 4L + m
        c[4 * g + 0] = _mm512_unpacklo_epi64(b[4 * g], b[4 * g + 2]);
        c[4 * g + 1] = _mm512_unpackhi_epi64(b[4 * g], b[4 * g + 2]);
        c[4 * g + 2] = _mm512_unpacklo_epi64(b[4 * g + 1], b[4 * g + 3]);
        c[4 * g + 3] = _mm512_unpackhi_epi64(b[4 * g + 1], b[4 * g + 3]);
    }
    for (int m = 0; m < 4; ++m) {   // column 4L + m = lane L of c[m], c[4+m], c[8+m], c[12+m]
        const __m512i d0 = _mm512_shuffle_i32x4(c[m], c[4 + m], 0x44), d1 = _mm512_shuffle_i32x4(c[m], c[4 + m], 0xEE);
        const __m512i d2 = _mm512_shuffle_i32x4(c[8 + m], c[12 + m], 0x44);
        const __m512i d3 = _mm512_shuffle_i32x4(c[8 + m], c[12 + m], 0xEE);
        t[m] = _mm512_shuffle_i32x4(d0, d2, 0x88);
        t[4 + m] = _mm512_shuffle_i32x4(d0, d2, 0xDD);
        t[8 + m] = _mm512_shuffle_i32x4(d1, d3, 0x88);
        t[12 + m] = _mm512_shuffle_i32x4(d1, d3, 0xDD);
    }
}

// A panel `width` (MR or NR) wide from `rows` (<= width) rows along which k runs:
// out[p * width + r] = pairs of row r (src + r * rs, k stride cs) for p < ceil(K/2), zero for
// rows <= r < width. Each row is converted into tmp first (width * (Kp + 16) pairs), then blocks of
// 16 rows x 16 pairs are transposed in registers (16 vector stores instead of 256 scalar ones).
void pack_k_rows(const float* src, int64_t rs, int64_t cs, int64_t rows, int width, int64_t K, uint32_t* out,
                 uint32_t* tmp) {
    const int64_t Kp = (K + 1) / 2, ldt = Kp + 16;
    for (int64_t r = 0; r < rows; ++r) row_pairs(src + r * rs, cs, K, tmp + r * ldt);
    int64_t p0 = 0;
    for (; p0 + 16 <= Kp; p0 += 16)
        for (int rb = 0; rb < width; rb += 16) {
            __m512i a[16], t[16];
            for (int i = 0; i < 16; ++i)
                a[i] = rb + i < rows ? _mm512_loadu_si512(tmp + (rb + i) * ldt + p0) : _mm512_setzero_si512();
            transpose16(a, t);
            const __mmask16 lanes = width - rb >= 16 ? 0xffff : (__mmask16)((1u << (width - rb)) - 1);
            for (int p = 0; p < 16; ++p) _mm512_mask_storeu_epi32(out + (p0 + p) * width + rb, lanes, t[p]);
        }
    for (int64_t p = p0; p < Kp; ++p)
        for (int r = 0; r < width; ++r) out[p * width + r] = r < rows ? tmp[r * ldt + p] : 0u;
}

}  // namespace

void pack_a(const float* A, int64_t a_rs, int64_t a_cs, int64_t rows, int64_t K, uint32_t* out, uint32_t* tmp) {
    if (a_rs == 1 && a_cs != 1) {   // the rows run along memory (a transposed operand): pair p is two runs
        const int64_t Kp = (K + 1) / 2;
        const __mmask16 k = (__mmask16)((1u << rows) - 1), panel = (__mmask16)((1u << MR) - 1);   // rows <= MR
        for (int64_t p = 0; p < Kp; ++p) {
            const __m512 lo = _mm512_maskz_loadu_ps(k, A + 2 * p * a_cs);
            const __m512 hi = 2 * p + 1 < K ? _mm512_maskz_loadu_ps(k, A + (2 * p + 1) * a_cs) : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(out + p * MR, panel, pairs_of(lo, hi));   // rows >= `rows` zero
        }
        return;
    }
    pack_k_rows(A, a_rs, a_cs, rows, MR, K, out, tmp);
}

void pack_b(const float* B, int64_t b_rs, int64_t b_cs, int64_t K, int64_t cols, uint32_t* out, uint32_t* tmp) {
    const int64_t Kp = (K + 1) / 2;
    if (b_rs == 1 && b_cs != 1) {   // k runs along memory (a transposed operand): column j is a row of pairs
        pack_k_rows(B, b_cs, 1, cols, NR, K, out, tmp);
        return;
    }
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
