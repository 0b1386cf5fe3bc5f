// im2col / col2im of stride-1 convolutions with AVX-512 (conv2d.cpp's generic loops handle
// the other strides and CPUs). A window row is a few to a few tens of floats (11 on the seed
// CNN's second layer), where the generic loops spend more on per-row set-up and scalar tails
// than on moving data. Here a row of up to 16 floats is one masked load and one masked store,
// the padding's zeros come from the load mask, and col2im gathers each input row's taps in a
// register (one store, no zero fill and no read-modify-write of overlapping rows).
// Compiled with -mavx512f/dq/bw/vl; conv2d.cpp calls these only when the SIMD variant is avx512.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/conv2d.hpp"

namespace deepkern::cpu::conv2d_isa {
namespace {

// Lanes [lo, hi) of a 16-lane vector (0 <= lo, hi <= 16); empty when hi <= lo.
inline __mmask16 lanes(int lo, int hi) {
    if (hi <= lo) return 0;
    return static_cast<__mmask16>((1u << hi) - (1u << lo));
}

}  // namespace

// x is (C, H, W); cols is (C*KH*KW, OH*OW) with row stride ld. Stride 1: output column ow of
// tap (i, j) reads x[c, oh - PH + i, ow - PW + j], zero outside the image.
void im2col_s1_avx512(const Conv2dShape& s, const float* x, float* cols, int64_t ld) {
    for (int c = 0; c < s.C; ++c) {
        const float* xc = x + static_cast<int64_t>(c) * s.H * s.W;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) {
                float* row = cols + (static_cast<int64_t>(c) * s.KH * s.KW + i * s.KW + j) * ld;
                const int shift = j - s.PW;                                   // input column = ow + shift
                const int lo = std::max(0, -shift), hi = std::min(s.OW, s.W - shift);  // ow inside the image
                if (s.OW <= 16) {
                    // One vector per output row. The rows of a tap are contiguous in cols, so a
                    // row is stored whole while the 16 lanes stay inside this image's tap row:
                    // the lanes past OW land on the next rows, written after it (unmasked stores
                    // are much the cheaper ones on Zen 4).
                    const int whole_rows = s.OH * s.OW >= 16 ? (s.OH * s.OW - 16) / s.OW + 1 : 0;
                    const __mmask16 row_lanes = lanes(lo, hi), last = lanes(0, s.OW);
                    for (int oh = 0; oh < s.OH; ++oh) {
                        const int h = oh - s.PH + i;
                        float* out = row + static_cast<int64_t>(oh) * s.OW;
                        __m512 v = _mm512_setzero_ps();
                        // masked-off lanes are never accessed, so the address may lie outside the image
                        if (h >= 0 && h < s.H) v = _mm512_maskz_loadu_ps(row_lanes, xc + static_cast<int64_t>(h) * s.W + shift);
                        if (oh < whole_rows)
                            _mm512_storeu_ps(out, v);
                        else
                            _mm512_mask_storeu_ps(out, last, v);
                    }
                    continue;
                }
                for (int oh = 0; oh < s.OH; ++oh) {
                    const int h = oh - s.PH + i;
                    float* out = row + static_cast<int64_t>(oh) * s.OW;
                    const bool inside = h >= 0 && h < s.H;
                    const float* xr = xc + static_cast<int64_t>(h) * s.W + shift;
                    for (int ow0 = 0; ow0 < s.OW; ow0 += 16) {
                        const int n = std::min(16, s.OW - ow0);
                        const __mmask16 load = inside ? lanes(std::max(lo, ow0) - ow0, std::min(hi, ow0 + n) - ow0) : 0;
                        const __m512 v = _mm512_maskz_loadu_ps(load, inside ? xr + ow0 : xc);
                        _mm512_mask_storeu_ps(out + ow0, lanes(0, n), v);
                    }
                }
            }
    }
}

// Input row h of channels [c0, c0 + CB), columns [w0, w0 + 16): the sum of each element's
// taps, one accumulator per channel (CB independent add chains; one chain alone would wait on
// the add latency at every tap), added in (i, j) order like the generic scatter.
template <int CB>
void col2im_rows(const Conv2dShape& s, const float* cols, int64_t ld, float* x, int c0, int h, int w0) {
    const int64_t tap_rows = static_cast<int64_t>(s.KH) * s.KW * ld;  // one channel's rows of cols
    const int n = std::min(16, s.W - w0);
    __m512 acc[CB];
#pragma GCC unroll 8
    for (int b = 0; b < CB; ++b) acc[b] = _mm512_setzero_ps();
    for (int i = 0; i < s.KH; ++i) {
        const int oh = h + s.PH - i;
        if (oh < 0 || oh >= s.OH) continue;
        for (int j = 0; j < s.KW; ++j) {
            const int shift = s.PW - j;  // output column = w + shift
            const __mmask16 m = lanes(std::max(w0, -shift) - w0, std::min(w0 + n, s.OW - shift) - w0);
            if (m == 0) continue;
            const float* seg = cols + c0 * tap_rows + static_cast<int64_t>(i * s.KW + j) * ld +
                               static_cast<int64_t>(oh) * s.OW + w0 + shift;
            // unrolled so the accumulators stay in registers (a loop over b kept them on the stack)
#pragma GCC unroll 8
            for (int b = 0; b < CB; ++b) acc[b] = _mm512_add_ps(acc[b], _mm512_maskz_loadu_ps(m, seg + b * tap_rows));
        }
    }
    // A whole-vector store spills into the next rows of the same channel, written after this
    // one; never into the next channel (already written when channels go in blocks) or image.
    const bool whole = static_cast<int64_t>(h) * s.W + w0 + 16 <= static_cast<int64_t>(s.H) * s.W;
#pragma GCC unroll 8
    for (int b = 0; b < CB; ++b) {
        float* at = x + (static_cast<int64_t>(c0 + b) * s.H + h) * s.W + w0;
        if (whole)
            _mm512_storeu_ps(at, acc[b]);
        else
            _mm512_mask_storeu_ps(at, lanes(0, n), acc[b]);
    }
}

// cols is (C*KH*KW, OH*OW) with row stride ld; x (C, H, W) is overwritten with the sum of each
// element's taps: x[c, h, w] = sum over (i, j) of cols[(c, i, j), (h + PH - i, w + PW - j)],
// added in (i, j) order like the generic scatter, so both give the same bits.
void col2im_s1_avx512(const Conv2dShape& s, const float* cols, int64_t ld, float* x) {
    constexpr int kBlock = 4;  // channels per pass
    int c = 0;
    for (; c + kBlock <= s.C; c += kBlock)
        for (int h = 0; h < s.H; ++h)
            for (int w0 = 0; w0 < s.W; w0 += 16) col2im_rows<kBlock>(s, cols, ld, x, c, h, w0);
    for (; c < s.C; ++c)
        for (int h = 0; h < s.H; ++h)
            for (int w0 = 0; w0 < s.W; w0 += 16) col2im_rows<1>(s, cols, ld, x, c, h, w0);
}

}  // namespace deepkern::cpu::conv2d_isa
