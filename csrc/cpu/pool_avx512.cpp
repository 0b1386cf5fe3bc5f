// 2x2 / stride-2 max-pool kernels with AVX-512: the forward and backward of max_pool2d, and the
// fused ReLU + max-pool of the conv layers (forward with gradient routes, routed backward).
//
// A step takes 32 input columns of a row pair (16 windows) and splits them into the even (a, c)
// and odd (b, d) columns with two lane permutes per row, so each lane holds one window's four
// taps. The first maximum in row-major order is three compares and selects (strict, so a tie
// keeps the earlier tap); windows holding a NaN, where the first NaN is the maximum (pool.cpp's
// rule), are rare and fixed under a mask test. A backward keeps each window's gradient in the
// lane of the tap it goes to and interleaves the taps back into columns with two permutes per
// row, so every input gradient is written once, by contiguous stores masked at the row's end.
// Rows as short as the seed CNN's (26 columns: 13 windows) take one step per row pair.
// Compiled with -mavx512f/dq/bw/vl; pool.cpp calls these only when the SIMD variant is avx512.
#include <immintrin.h>

#include <cstdint>

#include "cpu/pool.hpp"
#include "cpu/pool_window_avx512.hpp"

namespace deepkern::cpu::pool_isa {
namespace {

// Lanes of `cols` (0..32) consecutive input columns held in two vectors: the first 16, the rest
struct ColumnMasks {
    __mmask16 lo, hi;
};
inline ColumnMasks column_masks(int cols) {
    auto first = [](int k) { return static_cast<__mmask16>(k >= 16 ? 0xFFFF : k <= 0 ? 0 : (1u << k) - 1); };
    return {first(cols), first(cols - 16)};
}

inline __mmask16 window_mask(int n) { return column_masks(n).lo; }

// The four taps of the n (<= 16) windows starting at window w0 of rows r0, r1; lanes past n are 0.
inline Taps load_taps(const float* r0, const float* r1, int w0, int n) {
    // even / odd columns of the 32 floats lo (columns 0-15), hi (16-31); built here, not as
    // globals: a global would run AVX-512 code when the module loads, on any CPU
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const ColumnMasks m = column_masks(2 * n);
    const float* p0 = r0 + 2 * w0;
    const float* p1 = r1 + 2 * w0;
    const __m512 lo0 = _mm512_maskz_loadu_ps(m.lo, p0), hi0 = _mm512_maskz_loadu_ps(m.hi, p0 + 16);
    const __m512 lo1 = _mm512_maskz_loadu_ps(m.lo, p1), hi1 = _mm512_maskz_loadu_ps(m.hi, p1 + 16);
    return {_mm512_permutex2var_ps(lo0, even, hi0), _mm512_permutex2var_ps(lo0, odd, hi0),
            _mm512_permutex2var_ps(lo1, even, hi1), _mm512_permutex2var_ps(lo1, odd, hi1)};
}

// Rows g0, g1 of the input gradient over the n windows from w0: gradient v of each window at
// the tap `at` names (none when at is not 0-3), 0 at the other three
inline void store_routed(float* g0, float* g1, int w0, int n, __m512 v, __m512i at) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512 a = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_setzero_si512()), v);
    const __m512 b = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(1)), v);
    const __m512 c = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(2)), v);
    const __m512 d = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(3)), v);
    const ColumnMasks m = column_masks(2 * n);
    float* p0 = g0 + 2 * w0;
    float* p1 = g1 + 2 * w0;
    _mm512_mask_storeu_ps(p0, m.lo, _mm512_permutex2var_ps(a, lo, b));
    _mm512_mask_storeu_ps(p0 + 16, m.hi, _mm512_permutex2var_ps(a, hi, b));
    _mm512_mask_storeu_ps(p1, m.lo, _mm512_permutex2var_ps(c, lo, d));
    _mm512_mask_storeu_ps(p1 + 16, m.hi, _mm512_permutex2var_ps(c, hi, d));
}

// Zeros where no window reaches in a gradient plane (H, W) with row stride ld: an odd width's last
// column (rows [0, 2 * PH)) and an odd height's last row
inline void zero_uncovered(float* g, int64_t ld, int H, int W, int PH, int PW) {
    if (W > 2 * PW)
        for (int h = 0; h < 2 * PH; ++h) g[h * ld + W - 1] = 0.0f;
    for (int h = 2 * PH; h < H; ++h)
        for (int w = 0; w < W; ++w) g[h * ld + w] = 0.0f;
}

}  // namespace

// x plane (H, W) -> y plane (OH, OW) = max of each 2x2 window, OH = H / 2, OW = W / 2
void max2x2_plane_avx512(const float* x, float* y, int W, int OH, int OW) {
    for (int oh = 0; oh < OH; ++oh) {
        const float* r0 = x + static_cast<int64_t>(2 * oh) * W;
        float* yr = y + static_cast<int64_t>(oh) * OW;
        for (int w0 = 0; w0 < OW; w0 += 16) {
            const int n = OW - w0 < 16 ? OW - w0 : 16;
            const Taps t = load_taps(r0, r0 + W, w0, n);
            __m512 m = _mm512_max_ps(_mm512_max_ps(t.a, t.b), _mm512_max_ps(t.c, t.d));  // drops NaNs
            const __mmask16 nan = nan_windows(t);
            if (nan) m = _mm512_mask_mov_ps(m, nan, nan_value(t));
            _mm512_mask_storeu_ps(yr + w0, window_mask(n), m);
        }
    }
}

// gy plane (OH, OW), x plane (H, W) -> gx plane (H, W), OH = H / 2, OW = W / 2: each gradient at
// its window's first maximum, 0 elsewhere
void max2x2_backward_plane_avx512(const float* gy, const float* x, float* gx, int H, int W, int OH, int OW) {
    for (int oh = 0; oh < OH; ++oh) {
        const float* r0 = x + static_cast<int64_t>(2 * oh) * W;
        float* g0 = gx + static_cast<int64_t>(2 * oh) * W;
        const float* gr = gy + static_cast<int64_t>(oh) * OW;
        for (int w0 = 0; w0 < OW; w0 += 16) {
            const int n = OW - w0 < 16 ? OW - w0 : 16;
            const FirstMax m = first_max(load_taps(r0, r0 + W, w0, n));
            store_routed(g0, g0 + W, w0, n, _mm512_maskz_loadu_ps(window_mask(n), gr + w0), m.at);
        }
    }
    zero_uncovered(gx, W, H, W, OH, OW);
}

// The fused ReLU + max-pool (pool.hpp): x plane with row stride ld -> y (PH, PW), route (PH, PW)
void max2x2_relu_plane_avx512(const float* x, int64_t ld, float* y, uint8_t* route, int PH, int PW) {
    for (int ph = 0; ph < PH; ++ph) {
        const float* r0 = x + 2 * ph * ld;
        float* yr = y + static_cast<int64_t>(ph) * PW;
        uint8_t* rr = route + static_cast<int64_t>(ph) * PW;
        for (int w0 = 0; w0 < PW; w0 += 16) {
            const int n = PW - w0 < 16 ? PW - w0 : 16;
            store_relu_max(first_max(load_taps(r0, r0 + ld, w0, n)), yr + w0, rr + w0, window_mask(n));
        }
    }
}

// gy (PH, PW) and route -> g plane (H, W), row stride ld
void max2x2_route_backward_plane_avx512(const float* gy, const uint8_t* route, float* g, int64_t ld, int H, int W,
                                        int PH, int PW) {
    for (int ph = 0; ph < PH; ++ph) {
        float* g0 = g + 2 * ph * ld;
        const float* gr = gy + static_cast<int64_t>(ph) * PW;
        const uint8_t* rr = route + static_cast<int64_t>(ph) * PW;
        for (int w0 = 0; w0 < PW; w0 += 16) {
            const int n = PW - w0 < 16 ? PW - w0 : 16;
            const __mmask16 mask = window_mask(n);
            const __m512i at = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, rr + w0));
            store_routed(g0, g0 + ld, w0, n, _mm512_maskz_loadu_ps(mask, gr + w0), at);
        }
    }
    zero_uncovered(g, ld, H, W, PH, PW);
}

// gy (n,), route (n,) and the windows' first pixels base (n,) -> the routed non-zeros (pool.hpp's
// max2x2_route_nonzeros), 16 windows per step
int max2x2_route_nonzeros_avx512(const float* gy, const uint8_t* route, const int32_t* base, int n, int OW,
                                 int32_t* pixel, float* value) {
    const __m512i no_route = _mm512_set1_epi32(kNoRoute), ow = _mm512_set1_epi32(OW), one = _mm512_set1_epi32(1);
    int count = 0;
    for (int k0 = 0; k0 < n; k0 += 16) {
        const __mmask16 mask = window_mask(n - k0 < 16 ? n - k0 : 16);
        const __m512i r = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, route + k0));
        const __m512 g = _mm512_maskz_loadu_ps(mask, gy + k0);
        const __mmask16 take = _mm512_mask_cmpneq_epi32_mask(mask, r, no_route) &
                               _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_NEQ_UQ);  // a NaN is not zero
        // base + (r / 2) * OW + r % 2
        __m512i at = _mm512_add_epi32(_mm512_maskz_loadu_epi32(mask, base + k0),
                                      _mm512_mullo_epi32(_mm512_srli_epi32(r, 1), ow));
        at = _mm512_add_epi32(at, _mm512_and_si512(r, one));
        _mm512_storeu_si512(pixel + count, _mm512_maskz_compress_epi32(take, at));
        _mm512_storeu_ps(value + count, _mm512_maskz_compress_ps(take, g));
        count += __builtin_popcount(take);
    }
    return count;
}

}  // namespace deepkern::cpu::pool_isa
