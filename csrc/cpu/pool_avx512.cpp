// 2x2 / stride-2 max-pool backward with AVX-512, a whole pair of input rows per step.
// The generic kernel (pool.cpp) de-interleaves even/odd columns into window lanes and
// interleaves the four gradients back, ~11 instructions per window. Here each zmm holds 16
// adjacent input columns (8 windows): swapping the lanes of each pair gives every lane its
// window partner, so the window maximum, the first-maximum masks and the stores all stay in
// input-column order: ~3 instructions per window, stores contiguous and masked at the edge.
// Compiled with -mavx512f/dq/bw/vl; pool.cpp calls it only when the SIMD variant is avx512.
#include <immintrin.h>

#include <cstdint>

#include "cpu/pool.hpp"

namespace deepkern::cpu::pool_isa {

// gy plane (OH, OW), x plane (H, W) -> gx plane (H, W), OH = H / 2, OW = W / 2. Each gradient
// goes to the first maximum of its window in row-major order (a b / c d); a NaN is the maximum
// (pool.cpp's rule), so in a window holding NaNs the first NaN takes the gradient.
void max2x2_backward_plane_avx512(const float* gy, const float* x, float* gx, int H, int W, int OH, int OW) {
    const int cols = 2 * OW;                              // input columns covered by windows
    const __mmask16 even = 0x5555;                        // lanes of columns a and c
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    for (int oh = 0; oh < OH; ++oh) {
        const float* r0 = x + static_cast<int64_t>(2 * oh) * W;
        const float* r1 = r0 + W;
        float* g0 = gx + static_cast<int64_t>(2 * oh) * W;
        float* g1 = g0 + W;
        const float* gr = gy + static_cast<int64_t>(oh) * OW;
        for (int c0 = 0; c0 < cols; c0 += 16) {
            const int n = cols - c0 < 16 ? cols - c0 : 16;  // even
            const __mmask16 m16 = static_cast<__mmask16>((1u << n) - 1);
            const __mmask16 m8 = static_cast<__mmask16>((1u << (n / 2)) - 1);
            const __m512 v0 = _mm512_maskz_loadu_ps(m16, r0 + c0);
            const __m512 v1 = _mm512_maskz_loadu_ps(m16, r1 + c0);
            const __m512 s0 = _mm512_permute_ps(v0, 0xB1);   // partner column in the same row
            const __m512 s1 = _mm512_permute_ps(v1, 0xB1);
            const __m512 mx = _mm512_max_ps(_mm512_max_ps(v0, s0), _mm512_max_ps(v1, s1));
            __mmask16 eq0 = _mm512_cmp_ps_mask(v0, mx, _CMP_EQ_OQ);
            __mmask16 eqs0 = _mm512_cmp_ps_mask(s0, mx, _CMP_EQ_OQ);
            __mmask16 eq1 = _mm512_cmp_ps_mask(v1, mx, _CMP_EQ_OQ);
            __mmask16 eqs1 = _mm512_cmp_ps_mask(s1, mx, _CMP_EQ_OQ);
            // windows holding a NaN: their NaN lanes are the maxima (max_ps would drop them)
            const __mmask16 nan0 = _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q);
            const __mmask16 nans0 = _mm512_cmp_ps_mask(s0, s0, _CMP_UNORD_Q);
            const __mmask16 nan1 = _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
            const __mmask16 nans1 = _mm512_cmp_ps_mask(s1, s1, _CMP_UNORD_Q);
            const __mmask16 has_nan = nan0 | nans0 | nan1 | nans1;  // per lane: its window has a NaN
            if (has_nan) {
                eq0 = (eq0 & ~has_nan) | nan0;
                eqs0 = (eqs0 & ~has_nan) | nans0;
                eq1 = (eq1 & ~has_nan) | nan1;
                eqs1 = (eqs1 & ~has_nan) | nans1;
            }
            // a: equal; b: equal and a is not; c: equal, a and b not; d: equal, a, b, c not
            const __mmask16 hit0 = eq0 & (even | static_cast<__mmask16>(~eqs0));
            const __mmask16 hit1 = eq1 & static_cast<__mmask16>(~(eq0 | eqs0)) &
                                   (even | static_cast<__mmask16>(~eqs1));
            const __m512 g = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(m8, gr + c0 / 2));
            _mm512_mask_storeu_ps(g0 + c0, m16, _mm512_maskz_mov_ps(hit0, g));
            _mm512_mask_storeu_ps(g1 + c0, m16, _mm512_maskz_mov_ps(hit1, g));
        }
        if (W > cols) {  // odd width: the last column is in no window
            g0[W - 1] = 0.0f;
            g1[W - 1] = 0.0f;
        }
    }
    for (int64_t i = static_cast<int64_t>(2 * OH) * W; i < static_cast<int64_t>(H) * W; ++i) gx[i] = 0.0f;
}

}  // namespace deepkern::cpu::pool_isa
