// conv2d (NCHW cross-correlation), forward and backward.
#pragma once

#include "common/geometry.hpp"
#include <cstdint>
#include <vector>

namespace deepkern::cpu {

using deepkern::Conv2dShape;  // common/geometry.hpp

// x is (N, C, H, W), w is (OC, C, KH, KW), bias (OC,) or null, y is (N, OC, OH, OW)
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);

// gy is (N, OC, OH, OW); gx like x or null (no input gradient: the dX GEMMs and col2im are
// skipped), gw like w, gb (OC,) or null; all overwritten
void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                     float* gx, float* gw, float* gb);

// Hooks for the fused layers (conv2d_fused.cpp): the forward hands each image's output to a sink
// while it is in cache instead of writing y, and the backward builds each group's output gradient
// from a source instead of reading gy. Both are called from the kernels' threads concurrently,
// for different images.
struct ConvOutputSink {
    // image n's output (OC, OH, OW): channel o, row oh starts at block + o * channel_stride +
    // oh * row_stride (OW floats)
    virtual void image(int n, const float* block, int64_t channel_stride, int64_t row_stride) const = 0;
    // True when image() reads only rows < OH - OH % 2 and columns < OW - OW % 2 of a block (a 2x2
    // pool with floor): the Winograd forward then leaves the last odd row/column uncomputed.
    virtual bool reads_even_part() const { return false; }
    virtual ~ConvOutputSink() = default;
};
struct ConvGradSource {
    // the output gradient of images [n0, n0 + G) as dst (OC, G*OH*OW), row stride ld: image
    // n0 + g's (OH, OW) plane of channel o at dst + o * ld + g * OH*OW
    virtual void images(int n0, int G, float* dst, int64_t ld) const = 0;
    // Behind a 2x2 max-pool: the pooled gradient gy (N, OC, OH / 2, OW / 2) and its routes
    // (conv2d_fused.hpp), from which images() builds the conv output gradient; else null
    struct Pooled {
        const float* gy;
        const uint8_t* route;
    };
    virtual Pooled pooled() const { return {nullptr, nullptr}; }
    virtual ~ConvGradSource() = default;
};

// conv2d_forward with the output handed to sink (bias added, no ReLU)
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias,
                    const ConvOutputSink& sink);
// conv2d_forward with max(., 0) fused in the GEMM's store (NaN kept)
void conv2d_forward_relu(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);
// conv2d_backward with the output gradient taken from gy_source
void conv2d_backward(const Conv2dShape& s, const ConvGradSource& gy_source, const float* x, const float* w,
                     float* gx, float* gw, float* gb);

namespace conv2d_parts {
// A pooled source's non-zero gradients (ConvGradSource::pooled), channel by channel, for the
// kernels that skip the zeros (conv2d_sparse_wgrad.cpp, the sparse input gradient's lists in conv2d.cpp)
class PooledNonzeros {
public:
    PooledNonzeros(const Conv2dShape& s, ConvGradSource::Pooled pooled);
    // image n, channel o: the routed gradients that are not zero (a NaN is not zero) as pixels
    // (oh * OW + ow) and values, room for OH*OW + 16 each; returns their number. Window order: the
    // 2x2 windows row by row, one gradient each at most (a dense plane is scanned in the same order
    // where a window may hold more: row-major in the window, then an odd last column, an odd last row)
    int operator()(int n, int o, int32_t* pixel, float* value) const;

private:
    int PH_, PW_, OW_, OC_;
    ConvGradSource::Pooled pooled_;
    std::vector<int32_t> base_;  // (PH*PW): each window's first pixel
};

// Pieces of the fp32 kernels that the other conv2d kernels (conv2d_bf16.cpp) reuse.
// cols (C*KH*KW, OH*OW), row stride ld, from one image x (C, H, W); zero where a window hits
// padding (the AVX-512 rows for stride 1 when that SIMD variant is active)
void to_columns(const Conv2dShape& s, const float* x, float* cols, int64_t ld);
// one image x (C, H, W) overwritten with the sum of its taps in cols (C*KH*KW, OH*OW), row stride ld
void from_columns(const Conv2dShape& s, const float* cols, int64_t ld, float* x);
// sums[o] (+)= the sum of row o of rows (OC, n), row stride ld; add: accumulate onto sums
void row_sums(const float* rows, int OC, int n, int64_t ld, float* sums, bool add);
// no infinity or NaN among x's n floats
bool all_finite(const float* x, int64_t n);
// partials (chunks, size): the first overwritten with the sum over the chunks, added in chunk order
// (the same bits with any thread count), in parallel blocks of contiguous entries
void sum_partials(float* partials, int64_t chunks, int64_t size);
}  // namespace conv2d_parts

namespace conv2d_isa {
// conv2d_avx512.cpp, stride-1 geometry only; call only when the AVX-512 SIMD variant is active
// (simd_variant.hpp). cols is (C*KH*KW, OH*OW) with row stride ld, x one image (C, H, W).
void im2col_s1_avx512(const Conv2dShape& s, const float* x, float* cols, int64_t ld);
// x is overwritten (no zero fill needed)
void col2im_s1_avx512(const Conv2dShape& s, const float* cols, int64_t ld, float* x);
// The input gradient of one image when most of its output gradient is zero: the products of the
// zero gradients skipped, the columns added straight onto the image (conv2d_sparse_grad_avx512.cpp).
// The same bits as the AVX-512 GEMM's column product w^T @ gy followed by col2im, for a finite w.
// Built once per backward (w in tap-major order); its calls may run on several threads at once.
struct SparseInputGrad {
    SparseInputGrad(const Conv2dShape& shape, const float* w);  // w (OC, C, KH, KW)
    // One thread's working memory: the channels-last image and a dense gradient's lists
    struct Scratch {
        std::vector<float> hwc, g_t, grad;
        std::vector<int32_t> chan, count;
    };
    // gx (C, H, W) from the image's output gradient gy (OC rows of OH*OW, row stride ldg)
    void from_dense(const float* gy, int64_t ldg, float* gx, Scratch& scratch) const;
    // gx (C, H, W) from per-pixel lists: pixel p (< OH*OW) has count[p] non-zero channels
    // chan[p * stride + t], in increasing order, with values grad[p * stride + t]
    void from_lists(const int32_t* chan, const float* grad, const int32_t* count, int64_t stride, float* gx,
                    Scratch& scratch) const;

    Conv2dShape s;
    int cp;                 // C rounded up to 16: the lanes of a tap
    int64_t wt_row;         // KH * KW * cp
    int k_block;            // the AVX-512 GEMM's K blocks over the OC channels (gemm_driver.hpp's kc_step)
    std::vector<float> wt;  // (OC, KH, KW, cp): w[o, c, i, j] at wt[o, i, j, c], lanes c >= C zero
};
}  // namespace conv2d_isa

}  // namespace deepkern::cpu
