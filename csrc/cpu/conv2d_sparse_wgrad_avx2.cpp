// The sparse weight gradient's plain kernel (conv2d_sparse_wgrad_rows.hpp) compiled for AVX2;
// conv2d_sparse_wgrad.cpp calls it only when that SIMD variant is active.
#include "cpu/conv2d_sparse_wgrad.hpp"
#include "cpu/conv2d_sparse_wgrad_rows.hpp"

namespace deepkern::cpu::sparse_wgrad {
void add_windows_avx2(const int32_t* at, const float* value, int count, const float* xt, int64_t row, int KH,
                      int span, float* acc) {
    add_windows_plain(at, value, count, xt, row, KH, span, acc);
}
}  // namespace deepkern::cpu::sparse_wgrad
