// Single-thread row kernels for relu and (log_)softmax, written once in plain C++ that the
// compiler vectorises (OpenMP simd loops, a branch-free polynomial expf). This header is
// included by activation.cpp (generic: baseline x86-64), activation_avx2.cpp and
// activation_avx512.cpp, each compiled with its own ISA flags; everything here has internal
// linkage (anonymous namespace) and uses no std:: templates, so no ISA-specific copy of a
// function can be shared with a TU for another ISA. Include it only from those files.
#pragma once
#include <math.h>

#include <cstdint>

#include "cpu/activation.hpp"
#include "cpu/fast_exp.hpp"

// Comparisons in if-converted (vectorised) loops may be evaluated speculatively; with the
// default -ftrapping-math GCC refuses that below AVX-512 and leaves the exp loops scalar.
// The kernels never unmask FP exceptions, so nothing observable changes.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

namespace deepkern::cpu::act {
namespace {

// ---------------------------------------------------------------- relu
// x, y are (n,); NaN propagates like numpy.maximum(x, 0)
void relu_span(const float* x, float* y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

// gy, x, gx are (n,)
void relu_backward_span(const float* gy, const float* x, float* gx, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float g = gy[i];  // loaded unconditionally: a select, not a branch, without masked loads
        gx[i] = x[i] > 0.0f ? g : 0.0f;
    }
}

// ---------------------------------------------------------------- contiguous rows (inner == 1)
inline float row_max(const float* x, int64_t d) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t k = 0; k < d; ++k) mx = x[k] > mx ? x[k] : mx;
    return mx;
}

// x, y are (rows, d): three passes over each row while it sits in L1
template <bool Log>
void softmax_rows(const float* x, float* y, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * d;
        float* yr = y + r * d;
        const float mx = row_max(xr, d);
        float sum = 0.0f;
        if (Log) {
#pragma omp simd reduction(+ : sum)
            for (int64_t k = 0; k < d; ++k) sum += fast_exp(xr[k] - mx);
            const float log_sum = logf(sum);
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) yr[k] = (xr[k] - mx) - log_sum;
        } else {
#pragma omp simd reduction(+ : sum)
            for (int64_t k = 0; k < d; ++k) {
                const float e = fast_exp(xr[k] - mx);
                yr[k] = e;
                sum += e;
            }
            const float inv = 1.0f / sum;
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) yr[k] *= inv;
        }
    }
}

// gy, y, gx are (rows, d). Softmax: gx = y * (gy - sum(gy * y)); log: gx = gy - exp(y) * sum(gy)
template <bool Log>
void softmax_backward_rows(const float* gy, const float* y, float* gx, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* g = gy + r * d;
        const float* yr = y + r * d;
        float* o = gx + r * d;
        float acc = 0.0f;
        if (Log) {
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < d; ++k) acc += g[k];
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) o[k] = g[k] - fast_exp(yr[k]) * acc;
        } else {
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < d; ++k) acc += g[k] * yr[k];
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) o[k] = yr[k] * (g[k] - acc);
        }
    }
}

// ---------------------------------------------------------------- strided axis (inner > 1)
// A slab of `cols` (<= kColBlock) adjacent columns of a (d, inner) matrix: element (k, j) is
// x[k * inner + j]. The reduction runs down the columns, so every loop is over j, contiguous.
template <bool Log>
void softmax_cols(const float* x, float* y, int64_t d, int64_t inner, int64_t cols) {
    float mx[kColBlock], sum[kColBlock];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) {
        mx[j] = x[j];
        sum[j] = 0.0f;
    }
    for (int64_t k = 1; k < d; ++k) {
        const float* xr = x + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) mx[j] = xr[j] > mx[j] ? xr[j] : mx[j];
    }
    for (int64_t k = 0; k < d; ++k) {
        const float* xr = x + k * inner;
        float* yr = y + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) {
            const float e = fast_exp(xr[j] - mx[j]);
            if (!Log) yr[j] = e;
            sum[j] += e;
        }
    }
    for (int64_t j = 0; j < cols; ++j) sum[j] = Log ? logf(sum[j]) : 1.0f / sum[j];
    for (int64_t k = 0; k < d; ++k) {
        const float* xr = x + k * inner;
        float* yr = y + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) yr[j] = Log ? (xr[j] - mx[j]) - sum[j] : yr[j] * sum[j];
    }
}

template <bool Log>
void softmax_backward_cols(const float* gy, const float* y, float* gx, int64_t d, int64_t inner, int64_t cols) {
    float acc[kColBlock];
    for (int64_t j = 0; j < cols; ++j) acc[j] = 0.0f;
    for (int64_t k = 0; k < d; ++k) {
        const float* g = gy + k * inner;
        const float* yr = y + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) acc[j] += Log ? g[j] : g[j] * yr[j];
    }
    for (int64_t k = 0; k < d; ++k) {
        const float* g = gy + k * inner;
        const float* yr = y + k * inner;
        float* o = gx + k * inner;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) o[j] = Log ? g[j] - fast_exp(yr[j]) * acc[j] : yr[j] * (g[j] - acc[j]);
    }
}

// The table one ISA file hands to the dispatcher in activation.cpp.
inline Kernels make_kernels() {
    Kernels k;
    k.relu = relu_span;
    k.relu_stream = relu_span;
    k.relu_backward = relu_backward_span;
    k.relu_backward_stream = relu_backward_span;
    k.softmax_rows = softmax_rows<false>;
    k.log_softmax_rows = softmax_rows<true>;
    k.softmax_backward_rows = softmax_backward_rows<false>;
    k.log_softmax_backward_rows = softmax_backward_rows<true>;
    k.softmax_cols = softmax_cols<false>;
    k.log_softmax_cols = softmax_cols<true>;
    k.softmax_backward_cols = softmax_backward_cols<false>;
    k.log_softmax_backward_cols = softmax_backward_cols<true>;
    return k;
}

}  // namespace
}  // namespace deepkern::cpu::act

#pragma GCC pop_options
