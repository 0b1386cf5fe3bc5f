// Batch normalisation over (N, C, S) activations: statistics per channel c over the N*S values
// x[n, c, s] (S = product of the spatial sizes, 1 for BatchNorm1d's (N, C) input).
#pragma once
#include <cstdint>

namespace deepkern::cpu {

// Training: batch mean and biased variance per channel (one pass, double sums), then
// y = (x - mean) * invstd * weight + bias in one fused pass. running_mean/running_var, when not
// null, become (1 - momentum) * r + momentum * batch (variance unbiased by M/(M-1) when
// `unbiased`, M = N*S). weight/bias may be null (no affine).
// x, y are (N, C, S); weight, bias, running_*, mean, invstd are (C,); mean/invstd are written.
void batch_norm_forward_train(const float* x, const float* weight, const float* bias, float* running_mean,
                              float* running_var, float* y, float* mean, float* invstd, int64_t N, int64_t C,
                              int64_t S, float momentum, float eps, bool unbiased);

// Eval: the running statistics normalise; mean/invstd (C,) receive them (invstd = 1/sqrt(var + eps)).
void batch_norm_forward_eval(const float* x, const float* weight, const float* bias, const float* running_mean,
                             const float* running_var, float* y, float* mean, float* invstd, int64_t N,
                             int64_t C, int64_t S, float eps);

// g, x, gx are (N, C, S); weight (C,) or null; mean, invstd (C,) from the forward; gw, gb (C,) or
// null (not wanted). gb = sum(g), gw = sum(g * xhat) per channel (double sums); gx is
// weight*invstd * (g - gb/M - xhat*gw/M) in training, weight*invstd * g in eval.
void batch_norm_backward(const float* g, const float* x, const float* weight, const float* mean,
                         const float* invstd, float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t S,
                         bool training);

namespace bn {
// The single-thread loops, one table per instruction set (batchnorm_runs.hpp); see each member's
// comment there. batchnorm.cpp splits the work and picks the table of the active SIMD variant.
struct Kernels {
    void (*stats_run)(const float* x, int64_t len, double k, double* a, double* b);
    void (*stats_rows)(const float* x, int64_t C, int64_t rows, const double* k, int64_t c0, int64_t c1, double* a,
                       double* b);
    void (*grad_run)(const float* g, const float* x, int64_t len, double m, double* a, double* b);
    void (*grad_rows)(const float* g, const float* x, int64_t C, int64_t rows, const float* mean, int64_t c0,
                      int64_t c1, double* a, double* b);
    void (*affine_run)(const float* in, int64_t len, float m, float k, float sh, const float* add, float q,
                       float* out);
    void (*affine_row)(const float* in, const float* m, const float* k, const float* sh, const float* add,
                       const float* q, float* out, int64_t C);
};
const Kernels& generic_kernels();
const Kernels& avx2_kernels();
const Kernels& avx512_kernels();
}  // namespace bn

}  // namespace deepkern::cpu
