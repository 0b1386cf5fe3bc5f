// relu, softmax, log_softmax, forward and backward.
#pragma once
#include <cstdint>

namespace deepkern::cpu {

// x, y, gy, gx are (n,)
void relu_forward(const float* x, float* y, int64_t n);
void relu_backward(const float* gy, const float* x, float* gx, int64_t n);

// Softmax along the middle axis of a (outer, dim, inner) view of the array.
void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner);
void softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner);
void log_softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner);
void log_softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner);

namespace act {

// Columns handled together on the strided (inner > 1) softmax path.
constexpr int64_t kColBlock = 256;

// One instruction set's single-thread kernels (activation_rows.hpp); activation.cpp splits
// the work over threads and calls them. Shapes: span (n,), rows (rows, d), cols: a (d, cols)
// slab of a (d, inner) matrix, cols <= kColBlock.
struct Kernels {
    void (*relu)(const float* x, float* y, int64_t n);
    // relu for outputs too large to stay in cache: streaming stores where the ISA file has them
    void (*relu_stream)(const float* x, float* y, int64_t n);
    void (*relu_backward)(const float* gy, const float* x, float* gx, int64_t n);
    void (*relu_backward_stream)(const float* gy, const float* x, float* gx, int64_t n);  // as relu_stream
    void (*softmax_rows)(const float* x, float* y, int64_t rows, int64_t d);
    void (*log_softmax_rows)(const float* x, float* y, int64_t rows, int64_t d);
    void (*softmax_backward_rows)(const float* gy, const float* y, float* gx, int64_t rows, int64_t d);
    void (*log_softmax_backward_rows)(const float* gy, const float* y, float* gx, int64_t rows, int64_t d);
    void (*softmax_cols)(const float* x, float* y, int64_t d, int64_t inner, int64_t cols);
    void (*log_softmax_cols)(const float* x, float* y, int64_t d, int64_t inner, int64_t cols);
    void (*softmax_backward_cols)(const float* gy, const float* y, float* gx, int64_t d, int64_t inner,
                                  int64_t cols);
    void (*log_softmax_backward_cols)(const float* gy, const float* y, float* gx, int64_t d, int64_t inner,
                                      int64_t cols);
};

const Kernels& generic_kernels();  // activation.cpp
const Kernels& avx2_kernels();     // activation_avx2.cpp
const Kernels& avx512_kernels();   // activation_avx512.cpp

}  // namespace act

}  // namespace deepkern::cpu
