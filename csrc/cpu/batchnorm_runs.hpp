// Single-thread batch-norm loops over contiguous runs, written once in plain C++ that the
// compiler vectorises (OpenMP simd loops). Included by batchnorm.cpp (generic x86-64),
// batchnorm_avx2.cpp and batchnorm_avx512.cpp, each compiled with its own ISA flags; everything
// here has internal linkage, so no ISA-specific copy is shared with another TU. Include it only
// from those files.
#pragma once
#include <cstdint>

#include "cpu/batchnorm.hpp"

namespace deepkern::cpu::bn {
namespace {

// a += sum(x - k), b += sum((x - k)^2) over x (len,), in double
void stats_run(const float* x, int64_t len, double k, double* a, double* b) {
    double sa = 0.0, sb = 0.0;
#pragma omp simd reduction(+ : sa, sb)
    for (int64_t s = 0; s < len; ++s) {
        const double d = static_cast<double>(x[s]) - k;
        sa += d;
        sb += d * d;
    }
    *a += sa;
    *b += sb;
}

// `rows` rows of (N, C) from x, channels [c0, c1): a[c] += sum(x[r, c] - k[c]), b[c] += sum of the
// squares. Row by row, vectorised across channels (a and b stay in L1: at most a block of them).
void stats_rows(const float* x, int64_t C, int64_t rows, const double* k, int64_t c0, int64_t c1,
                double* __restrict a, double* __restrict b) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* __restrict xr = x + r * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) {
            const double d = static_cast<double>(xr[c]) - k[c];
            a[c] += d;
            b[c] += d * d;
        }
    }
}

// a += sum(g), b += sum(g * (x - m)) over g, x (len,), in double
void grad_run(const float* g, const float* x, int64_t len, double m, double* a, double* b) {
    double sa = 0.0, sb = 0.0;
#pragma omp simd reduction(+ : sa, sb)
    for (int64_t s = 0; s < len; ++s) {
        const double gv = g[s];
        sa += gv;
        sb += gv * (static_cast<double>(x[s]) - m);
    }
    *a += sa;
    *b += sb;
}

// `rows` rows of (N, C) from g and x, channels [c0, c1): a[c] += sum(g[r, c]),
// b[c] += sum(g[r, c] * (x[r, c] - mean[c])), row by row like stats_rows
void grad_rows(const float* g, const float* x, int64_t C, int64_t rows, const float* mean, int64_t c0, int64_t c1,
               double* __restrict a, double* __restrict b) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* __restrict gr = g + r * C;
        const float* __restrict xr = x + r * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) {
            const double gv = gr[c];
            a[c] += gv;
            b[c] += gv * (static_cast<double>(xr[c]) - mean[c]);
        }
    }
}

// out = (in - m) * k + sh (+ add * q when add is given), over len values of one channel
void affine_run(const float* in, int64_t len, float m, float k, float sh, const float* add, float q, float* out) {
    if (add) {
#pragma omp simd
        for (int64_t s = 0; s < len; ++s) out[s] = (in[s] - m) * k + sh + add[s] * q;
    } else {
#pragma omp simd
        for (int64_t s = 0; s < len; ++s) out[s] = (in[s] - m) * k + sh;
    }
}

// The same over one row of (N, C), every value its own channel
void affine_row(const float* in, const float* m, const float* k, const float* sh, const float* add, const float* q,
                float* out, int64_t C) {
    if (add) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = (in[c] - m[c]) * k[c] + sh[c] + add[c] * q[c];
    } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = (in[c] - m[c]) * k[c] + sh[c];
    }
}

inline Kernels make_kernels() {
    Kernels k;
    k.stats_run = stats_run;
    k.stats_rows = stats_rows;
    k.grad_run = grad_run;
    k.grad_rows = grad_rows;
    k.affine_run = affine_run;
    k.affine_row = affine_row;
    return k;
}

}  // namespace
}  // namespace deepkern::cpu::bn
