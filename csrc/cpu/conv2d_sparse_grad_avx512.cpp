// The input gradient of a conv backward when most of the output gradient is zero (conv2d.hpp's
// SparseInputGrad), with AVX-512.
//
// Behind a 2x2 max-pool (and a ReLU) at most one output in four gets a gradient, so three in four
// of the dense column product's multiply-adds add zeros. Here lanes run along the input channels
// of one tap: for each output pixel, its column (one vector group per tap) gains w[o, tap, :] *
// gy[o, p] for each channel o whose gradient at that pixel is not zero, o in increasing order.
// That is exactly the GEMM's chain of fused multiply-adds for each column entry with the zero terms
// left out (for a finite w a zero's product is a signed zero, which adds nothing), so the column
// has the GEMM's bits. The column is not stored: each tap's vectors are added at once onto the
// image's channels-last input gradient, and the pixels go in reverse order, so every input element
// receives its taps in increasing (i, j) order, starting from +0, as col2im adds them (col2im
// never holds a -0.0, so the pixels whose columns are all zero can be skipped). The channels-last
// image is then transposed into (C, H, W). No column matrix, no col2im pass.
//
// The non-zero gradients come as per-pixel lists (channel, value): from a pooled source's routes
// (conv2d.cpp), or compressed here from a dense gradient (a transposed copy, no branch per
// channel: a branch on a random ~20% bit mispredicts often enough to cost as much as the products).
// Compiled with -mavx512f/dq/bw/vl; conv2d.cpp calls it only when the SIMD variant is avx512.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/conv2d.hpp"
#include "cpu/gemm_driver.hpp"
#include "cpu/transpose16_avx512.hpp"

namespace deepkern::cpu::conv2d_isa {
namespace {

constexpr int kLanes = 16;
// vectors of a pixel's column per pass: accumulators + a gradient + a weight vector in registers
constexpr int kMostVectors = 24;
// A pass reads its vectors of every channel's weights (OC x V x 64 bytes) once per listed channel
// of every pixel: passes narrow enough that those stay in a 32 KiB L1 with the image rows being
// added to (seed CNN conv2, 64 channels, 18 vectors: 3 passes of 6 ran the backward 1.03-1.05x
// faster than one of 18 whose 72 KiB of weights stream from L2; in-process paired rounds)
constexpr int64_t kPassWeightBytes = 24 << 10;
constexpr int kLeastVectors = 4;  // narrower passes cost more in list reads and stores than they save

// Per-pixel lists of non-zero gradients: pixel p has count[p] channels, in increasing order,
// channel chan[p * stride + t] with gradient grad[p * stride + t]
struct ListsView {
    const int32_t* chan;
    const float* grad;
    const int32_t* count;
    int64_t stride;
};

// One pass: the column vectors [v0, v0 + V) of every listed pixel, in reverse pixel order, each
// added onto the channels-last image at its tap. at[v]: the vector's offset from the tap window's
// corner (its row i, column j, lane block u); ti/tj: the tap's (i, j) for the bounds checks.
struct Pass {
    int v0;
    std::array<int64_t, kMostVectors> at;
    std::array<int, kMostVectors> ti, tj;
};

// sum (V vectors) += wt[channel, v0:v0+V] * gradient: the GEMM's w * g + sum
template <int V>
inline void add_channel(const SparseInputGrad& g, int32_t channel, float gradient, int v0, __m512 (&sum)[V]) {
    const __m512 gv = _mm512_set1_ps(gradient);
    const float* wo = g.wt.data() + static_cast<int64_t>(channel) * g.wt_row + static_cast<int64_t>(v0) * kLanes;
#pragma GCC unroll 24
    for (int v = 0; v < V; ++v) sum[v] = _mm512_fmadd_ps(_mm512_loadu_ps(wo + kLanes * v), gv, sum[v]);
}

// acc (V vectors) for pixel p: sum over its listed channels of wt[chan, v0:v0+V] * grad, as the GEMM
// sums them: fused multiply-adds in channel order within each K block of g.k_block channels, from
// +0, and each block's sum then added onto the total of the blocks before it (its C tile)
template <int V>
inline void column(const SparseInputGrad& g, const ListsView& lists, int p, int v0, __m512 (&acc)[V]) {
    const int32_t* chan = lists.chan + p * lists.stride;
    const float* grad = lists.grad + p * lists.stride;
    const int count = lists.count[p];
#pragma GCC unroll 24
    for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
    if (g.k_block >= g.s.OC) {  // one K block (at most 384 channels): one chain
        for (int t = 0; t < count; ++t) add_channel<V>(g, chan[t], grad[t], v0, acc);
        return;
    }
    int t = 0;
    for (; t < count && chan[t] < g.k_block; ++t) add_channel<V>(g, chan[t], grad[t], v0, acc);
    while (t < count) {  // the next block with a listed channel (one without adds +0)
        const int end = (chan[t] / g.k_block + 1) * g.k_block;
        __m512 part[V];
#pragma GCC unroll 24
        for (int v = 0; v < V; ++v) part[v] = _mm512_setzero_ps();
        for (; t < count && chan[t] < end; ++t) add_channel<V>(g, chan[t], grad[t], v0, part);
#pragma GCC unroll 24
        for (int v = 0; v < V; ++v) acc[v] = _mm512_add_ps(part[v], acc[v]);  // the store's 1 * C + acc
    }
}

template <int V>
void run_pass(const SparseInputGrad& g, const ListsView& lists, const Pass& pass, float* hwc) {
    const Conv2dShape& s = g.s;
    for (int p = s.OH * s.OW - 1; p >= 0; --p) {
        if (lists.count[p] == 0) continue;
        __m512 acc[V];
        column<V>(g, lists, p, pass.v0, acc);
        const int oh = p / s.OW, ow = p % s.OW;
        const int h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;  // the window's corner in the image
        const int64_t corner = (static_cast<int64_t>(h0) * s.W + w0) * g.cp;  // (may lie outside: padding)
        const bool inside = h0 >= 0 && w0 >= 0 && h0 + s.KH <= s.H && w0 + s.KW <= s.W;
#pragma GCC unroll 24
        for (int v = 0; v < V; ++v) {
            if (!inside) {
                const int h = h0 + pass.ti[v], w = w0 + pass.tj[v];
                if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;  // a tap on the padding
            }
            float* d = hwc + (corner + pass.at[v]);
            _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), acc[v]));
        }
    }
}

using PassFn = void (*)(const SparseInputGrad&, const ListsView&, const Pass&, float*);

template <int... V>
constexpr std::array<PassFn, sizeof...(V)> pass_table(std::integer_sequence<int, V...>) {
    return {&run_pass<V + 1>...};
}

// gx (C, H, W) of one image from its lists; hwc: scratch for the channels-last image
void image_from_lists(const SparseInputGrad& g, const ListsView& lists, float* gx, std::vector<float>& hwc_buffer) {
    const Conv2dShape& s = g.s;
    const int64_t hw = static_cast<int64_t>(s.H) * s.W;
    hwc_buffer.assign(static_cast<size_t>(hw * g.cp), 0.0f);  // every element's sum starts at +0, as col2im's
    float* hwc = hwc_buffer.data();
    static constexpr auto passes = pass_table(std::make_integer_sequence<int, kMostVectors>{});
    const int cv = g.cp / kLanes, vectors = s.KH * s.KW * cv;
    const int64_t vector_bytes = static_cast<int64_t>(s.OC) * kLanes * static_cast<int64_t>(sizeof(float));
    const int width = static_cast<int>(std::clamp<int64_t>(kPassWeightBytes / vector_bytes, kLeastVectors, kMostVectors));
    Pass pass;
    for (int v0 = 0; v0 < vectors; v0 += width) {  // passes in tap order: each element's taps stay in order
        const int V = std::min(width, vectors - v0);
        pass.v0 = v0;
        for (int v = 0; v < V; ++v) {
            const int tap = (v0 + v) / cv, u = (v0 + v) % cv;
            pass.ti[v] = tap / s.KW;
            pass.tj[v] = tap % s.KW;
            pass.at[v] = (static_cast<int64_t>(pass.ti[v]) * s.W + pass.tj[v]) * g.cp + u * kLanes;
        }
        passes[V - 1](g, lists, pass, hwc);
    }
    for (int64_t p0 = 0; p0 < hw; p0 += kLanes)  // (H*W, cp) -> (C, H*W)
        for (int c0 = 0; c0 < s.C; c0 += kLanes)
            simd::transpose16(hwc + p0 * g.cp + c0, g.cp, std::min(kLanes, s.C - c0),
                              static_cast<int>(std::min<int64_t>(kLanes, hw - p0)), gx + c0 * hw + p0,
                              static_cast<int>(hw));
}

}  // namespace

SparseInputGrad::SparseInputGrad(const Conv2dShape& shape, const float* w)
    : s(shape), cp((shape.C + kLanes - 1) / kLanes * kLanes), wt_row(static_cast<int64_t>(shape.KH) * shape.KW * cp),
      k_block(gemm::kc_step(gemm::avx512_kernels(), std::max(shape.OC, 1))),
      wt(static_cast<size_t>(shape.OC) * wt_row, 0.0f) {
    for (int o = 0; o < s.OC; ++o)  // wt[o, i, j, c] = w[o, c, i, j]; lanes c >= C stay 0
        for (int c = 0; c < s.C; ++c)
            for (int k = 0; k < s.KH * s.KW; ++k)
                wt[o * wt_row + k * cp + c] = w[(static_cast<int64_t>(o) * s.C + c) * s.KH * s.KW + k];
}

void SparseInputGrad::from_lists(const int32_t* chan, const float* grad, const int32_t* count, int64_t stride,
                                 float* gx, Scratch& scratch) const {
    image_from_lists(*this, ListsView{chan, grad, count, stride}, gx, scratch.hwc);
}

void SparseInputGrad::from_dense(const float* gy, int64_t ldg, float* gx, Scratch& scratch) const {
    const int P = s.OH * s.OW, OC = s.OC;
    const int stride = (OC + kLanes - 1) / kLanes * kLanes;  // the lists have room for whole-vector stores
    std::vector<float>& g_t = scratch.g_t;
    std::vector<float>& grad = scratch.grad;
    std::vector<int32_t>& chan = scratch.chan;
    std::vector<int32_t>& count = scratch.count;
    g_t.resize(static_cast<size_t>(kLanes) * stride);
    chan.resize(static_cast<size_t>(P) * stride);
    grad.resize(static_cast<size_t>(P) * stride);
    count.resize(static_cast<size_t>(P));
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 zero = _mm512_setzero_ps();
    for (int p0 = 0; p0 < P; p0 += kLanes) {
        const int np = std::min(kLanes, P - p0);
        for (int o0 = 0; o0 < OC; o0 += kLanes)  // g_t[l, o] = gy[o, p0 + l]
            simd::transpose16(gy + o0 * ldg + p0, ldg, np, std::min(kLanes, OC - o0), g_t.data() + o0, stride);
        for (int l = 0; l < np; ++l) {
            const int64_t at = static_cast<int64_t>(p0 + l) * stride;
            int n = 0;
            for (int o0 = 0; o0 < OC; o0 += kLanes) {
                const int left = OC - o0;
                const __mmask16 valid = static_cast<__mmask16>(left >= kLanes ? 0xFFFFu : (1u << left) - 1u);
                const __m512 gv = _mm512_maskz_loadu_ps(valid, g_t.data() + l * stride + o0);
                const __mmask16 nz = _mm512_mask_cmp_ps_mask(valid, gv, zero, _CMP_NEQ_UQ);  // a NaN is not zero
                // packed to the front in channel order; whole-vector stores (the lists have room)
                _mm512_storeu_ps(grad.data() + at + n, _mm512_maskz_compress_ps(nz, gv));
                _mm512_storeu_si512(chan.data() + at + n,
                                    _mm512_maskz_compress_epi32(nz, _mm512_add_epi32(lane, _mm512_set1_epi32(o0))));
                n += __builtin_popcount(nz);
            }
            count[p0 + l] = n;
        }
    }
    image_from_lists(*this, ListsView{chan.data(), grad.data(), count.data(), stride}, gx, scratch.hwc);
}

}  // namespace deepkern::cpu::conv2d_isa
