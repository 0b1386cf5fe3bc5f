// relu and (log_)softmax over any axis, viewed as (outer, dim, inner).
#include "cpu/activation.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/parallel.hpp"

namespace deepkern::cpu {

// x, y are (n,)
void relu_forward(const float* x, float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_backward(const float* gy, const float* x, float* gx, int64_t n) {
#pragma omp parallel for simd schedule(static) if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) gx[i] = x[i] > 0.0f ? gy[i] : 0.0f;
}

namespace {

// Softmax of one strided row: x[k * inner] for k < dim. Accumulates in double.
template <bool Log>
void softmax_row(const float* x, float* y, int64_t dim, int64_t inner) {
    float mx = -INFINITY;
    for (int64_t k = 0; k < dim; ++k) mx = std::max(mx, x[k * inner]);
    double sum = 0.0;
    for (int64_t k = 0; k < dim; ++k) sum += std::exp(static_cast<double>(x[k * inner] - mx));
    if (Log) {
        const float lse = static_cast<float>(std::log(sum)) + mx;
        for (int64_t k = 0; k < dim; ++k) y[k * inner] = x[k * inner] - lse;
    } else {
        const double inv = 1.0 / sum;
        for (int64_t k = 0; k < dim; ++k) y[k * inner] = static_cast<float>(std::exp(static_cast<double>(x[k * inner] - mx)) * inv);
    }
}

template <bool Log>
void softmax_all(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    const int64_t rows = outer * inner;
#pragma omp parallel for schedule(static) if (worth_parallel(rows * dim))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t o = r / inner, i = r % inner;
        const int64_t base = o * dim * inner + i;
        softmax_row<Log>(x + base, y + base, dim, inner);
    }
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    softmax_all<false>(x, y, outer, dim, inner);
}

void log_softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    softmax_all<true>(x, y, outer, dim, inner);
}

// gx = y * (gy - sum(gy * y))
void softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner) {
    const int64_t rows = outer * inner;
#pragma omp parallel for schedule(static) if (worth_parallel(rows * dim))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t base = (r / inner) * dim * inner + r % inner;
        double dot = 0.0;
        for (int64_t k = 0; k < dim; ++k) dot += static_cast<double>(gy[base + k * inner]) * y[base + k * inner];
        const float d = static_cast<float>(dot);
        for (int64_t k = 0; k < dim; ++k) gx[base + k * inner] = y[base + k * inner] * (gy[base + k * inner] - d);
    }
}

// gx = gy - exp(y) * sum(gy)
void log_softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner) {
    const int64_t rows = outer * inner;
#pragma omp parallel for schedule(static) if (worth_parallel(rows * dim))
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t base = (r / inner) * dim * inner + r % inner;
        double sum = 0.0;
        for (int64_t k = 0; k < dim; ++k) sum += gy[base + k * inner];
        const float s = static_cast<float>(sum);
        for (int64_t k = 0; k < dim; ++k)
            gx[base + k * inner] = gy[base + k * inner] - std::exp(y[base + k * inner]) * s;
    }
}

}  // namespace deepkern::cpu
