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

}  // namespace deepkern::cpu
