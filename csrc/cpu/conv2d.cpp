// conv2d (NCHW cross-correlation) as GEMMs over image windows.
//
// Per image n (CKK = C*KH*KW, P = OH*OW):
//   forward   y_n (OC, P)    = W (OC, CKK) @ cols_n (CKK, P) + bias[oc]      (bias fused in the GEMM store)
//             stride-1 layers with many taps skip the cols copy: the GEMM reads the windows
//             straight from the image (conv2d_forward_wide below)
//   backward  gW (OC, CKK)  += gy_n (OC, P) @ cols_n^T (P, CKK)               (or its transpose, see below)
//             dcols (CKK, P) = W^T (CKK, OC) @ gy_n (OC, P), scattered back onto gx_n by col2im
// With at least as many images as threads, each thread takes whole images and its GEMMs run
// single-threaded (sgemm does that inside a parallel region); with fewer images the images run
// one after another and each GEMM uses the threads. im2col/col2im move O(CKK * P) floats per
// image, which stays in L2 for the seed networks' layers, against O(OC * CKK * P) multiply-adds.
#include "cpu/conv2d.hpp"

#include <omp.h>
#include <xmmintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/matmul.hpp"

namespace deepkern::cpu {
namespace {

// Output columns [lo, hi) of kernel offset j whose input column ow*SW - PW + j lies inside [0, W).
void valid_range(int j, int pad, int stride, int in, int out, int& lo, int& hi) {
    // ow*stride - pad + j >= 0  and  ow*stride - pad + j <= in - 1
    const int first = pad - j, last = in - 1 + pad - j;  // ow*stride must lie in [first, last]
    lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    hi = last < 0 ? 0 : std::min(out, last / stride + 1);
    if (hi < lo) hi = lo;
}

// dst[0:n] = src[0:n] for the short rows of im2col (an output row: tens of floats), in 4-float
// SSE moves with one overlapping move for the tail; a memcpy call costs more than the copy.
inline void copy_short(float* dst, const float* src, int n) {
    if (n < 4) {
        for (int i = 0; i < n; ++i) dst[i] = src[i];
        return;
    }
    int i = 0;
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_loadu_ps(src + i));
    if (i < n) _mm_storeu_ps(dst + n - 4, _mm_loadu_ps(src + n - 4));
}

// x is (C, H, W) of one image; cols is (C*KH*KW, OH*OW), zero where the window hits padding
void im2col(const Conv2dShape& s, const float* x, float* cols) {
    const int ohw = s.OH * s.OW;
    for (int c = 0; c < s.C; ++c) {
        const float* xc = x + static_cast<int64_t>(c) * s.H * s.W;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) {
                float* row = cols + (static_cast<int64_t>(c) * s.KH * s.KW + i * s.KW + j) * ohw;
                int lo, hi;
                valid_range(j, s.PW, s.SW, s.W, s.OW, lo, hi);
                for (int oh = 0; oh < s.OH; ++oh) {
                    const int h = oh * s.SH - s.PH + i;
                    float* out = row + oh * s.OW;
                    if (h < 0 || h >= s.H) {
                        std::memset(out, 0, sizeof(float) * s.OW);
                        continue;
                    }
                    const float* xr = xc + static_cast<int64_t>(h) * s.W - s.PW + j;  // xr[ow*SW] = x[h, w]
                    std::fill(out, out + lo, 0.0f);
                    if (s.SW == 1)
                        copy_short(out + lo, xr + lo, hi - lo);
                    else
                        for (int ow = lo; ow < hi; ++ow) out[ow] = xr[ow * s.SW];
                    std::fill(out + hi, out + s.OW, 0.0f);
                }
            }
    }
}

// cols is (C*KH*KW, OH*OW); adds each entry back onto x (C, H, W), which the caller zeroed
void col2im(const Conv2dShape& s, const float* cols, float* x) {
    const int ohw = s.OH * s.OW;
    for (int c = 0; c < s.C; ++c) {
        float* xc = x + static_cast<int64_t>(c) * s.H * s.W;
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) {
                const float* row = cols + (static_cast<int64_t>(c) * s.KH * s.KW + i * s.KW + j) * ohw;
                int lo, hi;
                valid_range(j, s.PW, s.SW, s.W, s.OW, lo, hi);
                for (int oh = 0; oh < s.OH; ++oh) {
                    const int h = oh * s.SH - s.PH + i;
                    if (h < 0 || h >= s.H) continue;
                    float* xr = xc + static_cast<int64_t>(h) * s.W - s.PW + j;
                    const float* in = row + oh * s.OW;
                    if (s.SW == 1)
                        for (int ow = lo; ow < hi; ++ow) xr[ow] += in[ow];
                    else
                        for (int ow = lo; ow < hi; ++ow) xr[ow * s.SW] += in[ow];
                }
            }
    }
}

// Sum of x[0:n] in 16 independent partial sums: a single running sum would serialise on the
// add latency (the compiler may not reorder float additions by itself).
float sum(const float* x, int n) {
    constexpr int kLanes = 16;
    float part[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) part[l] += x[i + l];
    float total = 0.0f;
    for (int l = 0; l < kLanes; ++l) total += part[l];
    for (; i < n; ++i) total += x[i];
    return total;
}

// A 1x1, stride-1, unpadded convolution reads the image itself as its column matrix.
bool cols_are_input(const Conv2dShape& s) {
    return s.KH == 1 && s.KW == 1 && s.SH == 1 && s.SW == 1 && s.PH == 0 && s.PW == 0;
}

// Whole images per thread when there are enough of them and no enclosing parallel region.
bool split_images(const Conv2dShape& s) {
    return !omp_in_parallel() && omp_get_max_threads() > 1 && s.N >= omp_get_max_threads();
}

// The wide (no im2col) forward pays off from this many taps per output (C * KH * KW); below it,
// im2col is a small copy and the extra Wp / OW columns of the wide form cost more.
// (Measured on the seed CNN: 9 taps (1 channel) favour im2col, 288 taps favour the wide form.)
constexpr int kWideMinTaps = 32;

// Forward of a stride-1 convolution with no im2col copy ("wide" output): in the zero-padded
// image xp (C, Hp, Wp), output pixel (oh, ow) reads xp[c, oh + i, ow + j] = xp_flat[off(c, i, j) + q]
// with q = oh * Wp + ow and off(c, i, j) = c*Hp*Wp + i*Wp + j. So one GEMM with B rows at those
// offsets computes y_wide (OC, Q) for every q < Q = (OH-1)*Wp + OW; the columns with ow >= OW
// are discarded when y_wide is compacted into y. It costs Wp/OW more multiply-adds than im2col
// but reads the image in place, which is cheaper when the image has several channels.
bool use_wide_forward(const Conv2dShape& s) {
    return s.SH == 1 && s.SW == 1 && s.C * s.KH * s.KW >= kWideMinTaps;
}

void conv2d_forward_wide(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int Hp = s.H + 2 * s.PH, Wp = s.W + 2 * s.PW;
    const int Q = (s.OH - 1) * Wp + s.OW;
    const bool padded = s.PH > 0 || s.PW > 0;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
    const int64_t xp_img = static_cast<int64_t>(s.C) * Hp * Wp;
    std::vector<int64_t> offsets(ckk);
    for (int c = 0; c < s.C; ++c)
        for (int i = 0; i < s.KH; ++i)
            for (int j = 0; j < s.KW; ++j) offsets[(c * s.KH + i) * s.KW + j] = c * static_cast<int64_t>(Hp) * Wp + i * Wp + j;

    auto image = [&](int n, std::vector<float>& xp, std::vector<float>& wide) {
        const float* src = x + n * x_img;
        if (padded) {  // xp (C, Hp, Wp): the image inside a zero border
            std::fill(xp.begin(), xp.end(), 0.0f);
            for (int c = 0; c < s.C; ++c)
                for (int h = 0; h < s.H; ++h)
                    copy_short(xp.data() + (static_cast<int64_t>(c) * Hp + h + s.PH) * Wp + s.PW,
                               src + (static_cast<int64_t>(c) * s.H + h) * s.W, s.W);
            src = xp.data();
        }
        // y_wide (OC, Q) = W (OC, CKK) @ windows (CKK, Q) + bias (per row)
        GemmArgs g;
        g.M = s.OC;
        g.N = Q;
        g.K = ckk;
        g.A = w;
        g.lda = ckk;
        g.B = src;
        g.b_row_offsets = offsets.data();
        g.C = wide.data();
        g.ldc = Q;
        g.bias_row = bias;
        sgemm(g);
        float* yn = y + n * y_img;
        for (int o = 0; o < s.OC; ++o)
            for (int oh = 0; oh < s.OH; ++oh)
                copy_short(yn + (static_cast<int64_t>(o) * s.OH + oh) * s.OW,
                           wide.data() + static_cast<int64_t>(o) * Q + oh * Wp, s.OW);
    };
    const size_t xp_size = padded ? static_cast<size_t>(xp_img) : 0;
    const size_t wide_size = static_cast<size_t>(s.OC) * Q;
    if (split_images(s)) {
#pragma omp parallel
        {
            std::vector<float> xp(xp_size), wide(wide_size);
#pragma omp for schedule(dynamic, 2)  // images are independent: a descheduled thread's share moves
            for (int n = 0; n < s.N; ++n) image(n, xp, wide);
        }
    } else {
        std::vector<float> xp(xp_size), wide(wide_size);
        for (int n = 0; n < s.N; ++n) image(n, xp, wide);
    }
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
    gemm_variant();  // surfaces a bad DEEPKERN_GEMM here, not from inside the parallel region
    if (use_wide_forward(s)) {
        conv2d_forward_wide(s, x, w, bias, y);
        return;
    }
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
    const bool direct = cols_are_input(s);
    auto image = [&](int n, std::vector<float>& cols) {
        const float* cn = x + n * x_img;
        if (!direct) {
            im2col(s, cn, cols.data());
            cn = cols.data();
        }
        // y_n (OC, P) = W (OC, CKK) @ cols_n (CKK, P) + bias (per row)
        GemmArgs g;
        g.M = s.OC;
        g.N = ohw;
        g.K = ckk;
        g.A = w;
        g.lda = ckk;
        g.B = cn;
        g.ldb = ohw;
        g.C = y + n * y_img;
        g.ldc = ohw;
        g.bias_row = bias;
        sgemm(g);
    };
    const size_t cols_size = direct ? 0 : static_cast<size_t>(ckk) * ohw;
    if (split_images(s)) {
#pragma omp parallel
        {
            std::vector<float> cols(cols_size);
#pragma omp for schedule(dynamic, 2)  // images are independent: a descheduled thread's share moves
            for (int n = 0; n < s.N; ++n) image(n, cols);
        }
    } else {
        std::vector<float> cols(cols_size);
        for (int n = 0; n < s.N; ++n) image(n, cols);
    }
}

void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                     float* gx, float* gw, float* gb) {
    const int ckk = s.C * s.KH * s.KW, ohw = s.OH * s.OW;
    const int64_t x_img = static_cast<int64_t>(s.C) * s.H * s.W, y_img = static_cast<int64_t>(s.OC) * ohw;
    const size_t w_size = static_cast<size_t>(s.OC) * ckk;
    const bool direct = cols_are_input(s);
    // Both operands of the weight-gradient GEMM hold the reduction (P) contiguously, so the one
    // on the B side is transposed while packed, and so is the A side unless C is narrow (the
    // driver reads A in place when C has at most two column tiles, 64 columns with AVX-512).
    // Accumulating gW^T (CKK, OC) transposes gy_n (OC x P); gW (OC, CKK) transposes cols_n
    // (CKK x P). The transposed form wins unless OC is both wide and above CKK.
    const bool gw_transposed = s.OC <= 64 || s.OC <= ckk;
    gemm_variant();  // surfaces a bad DEEPKERN_GEMM here, not from inside the parallel region
    std::fill(gw, gw + w_size, 0.0f);
    if (gb) std::fill(gb, gb + s.OC, 0.0f);

    // One worker's share: images n with n % team == rank; its partial gW/gb are added at the end.
    // (A fixed share, unlike the forward's dynamic one, keeps the gW/gb sums in the same order on
    // every run, so gradients are reproducible.)
    auto run = [&](int rank, int team) {
        std::vector<float> cols(direct ? 0 : static_cast<size_t>(ckk) * ohw);
        std::vector<float> dcols(direct ? 0 : static_cast<size_t>(ckk) * ohw);
        std::vector<float> gw_local(w_size, 0.0f);
        std::vector<float> gb_local(gb ? s.OC : 0, 0.0f);
        for (int n = rank; n < s.N; n += team) {
            const float* gyn = gy + n * y_img;
            const float* cn = x + n * x_img;
            if (!direct) {
                im2col(s, cn, cols.data());
                cn = cols.data();
            }
            if (gw_transposed)  // gW^T (CKK, OC) += cols_n (CKK, P) @ gy_n^T (P, OC)
                sgemm(false, true, ckk, s.OC, ohw, cn, ohw, gyn, ohw, 1.0f, gw_local.data(), s.OC, nullptr, false);
            else                // gW (OC, CKK) += gy_n (OC, P) @ cols_n^T (P, CKK)
                sgemm(false, true, s.OC, ckk, ohw, gyn, ohw, cn, ohw, 1.0f, gw_local.data(), ckk, nullptr, false);
            float* gxn = gx + n * x_img;
            if (direct) {       // gx_n (C, P) = W^T (C, OC) @ gy_n (OC, P)
                sgemm(true, false, ckk, ohw, s.OC, w, ckk, gyn, ohw, 0.0f, gxn, ohw, nullptr, false);
            } else {            // dcols (CKK, P) = W^T (CKK, OC) @ gy_n (OC, P), then col2im onto gx_n
                sgemm(true, false, ckk, ohw, s.OC, w, ckk, gyn, ohw, 0.0f, dcols.data(), ohw, nullptr, false);
                std::fill(gxn, gxn + x_img, 0.0f);
                col2im(s, dcols.data(), gxn);
            }
            if (gb)
                for (int o = 0; o < s.OC; ++o) gb_local[o] += sum(gyn + static_cast<int64_t>(o) * ohw, ohw);
        }
#pragma omp critical(deepkern_conv2d_backward_reduce)
        {
            if (gw_transposed) {
                for (int o = 0; o < s.OC; ++o)
                    for (int k = 0; k < ckk; ++k) gw[static_cast<int64_t>(o) * ckk + k] += gw_local[static_cast<int64_t>(k) * s.OC + o];
            } else {
                for (size_t i = 0; i < w_size; ++i) gw[i] += gw_local[i];
            }
            if (gb)
                for (int o = 0; o < s.OC; ++o) gb[o] += gb_local[o];
        }
    };
    if (split_images(s)) {
#pragma omp parallel
        run(omp_get_thread_num(), omp_get_num_threads());
    } else {
        run(0, 1);
    }
}

}  // namespace deepkern::cpu
