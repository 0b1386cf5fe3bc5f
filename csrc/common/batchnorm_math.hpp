// Batch normalisation's per-channel arithmetic, shared by the CPU and CUDA kernels: what the
// statistics and the gradient coefficients are, given the channel's double sums.
#pragma once
#include <math.h>

#ifdef __CUDACC__
#define DEEPKERN_HOST_DEVICE __host__ __device__
#else
#define DEEPKERN_HOST_DEVICE
#endif

namespace deepkern {

// Training statistics of one channel of M values from A = sum(x - k) and B = sum((x - k)^2)
// (k: a shift, the channel's first value): mean, invstd = 1/sqrt(biased var + eps), and the
// running statistics (when not null) moved by momentum, with the variance unbiased by
// M/(M-1) when `unbiased`.
DEEPKERN_HOST_DEVICE inline void channel_stats(double A, double B, double k, double M, float momentum, float eps,
                                               bool unbiased, float* mean, float* invstd, float* running_mean,
                                               float* running_var) {
    const double dm = A / M;
    double var = B / M - dm * dm;
    var = var < 0.0 ? 0.0 : var;  // rounding only; NaN stays NaN
    const double mu = k + dm;
    *mean = static_cast<float>(mu);
    *invstd = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
    if (running_mean) {
        const double m = momentum, batch_var = unbiased ? var * M / (M - 1.0) : var;
        *running_mean = static_cast<float>((1.0 - m) * *running_mean + m * mu);
        *running_var = static_cast<float>((1.0 - m) * *running_var + m * batch_var);
    }
}

// Gradient coefficients of one channel from A = sum(g) and B = sum(g * (x - mean)):
// gx = g * k + (x - mean) * c1 + c0 (c1 = c0 = 0 in eval), gb = A, gw = B * invstd (each
// written when not null). `weight` is 1 without affine.
DEEPKERN_HOST_DEVICE inline void channel_grad_coefficients(double A, double B, double invstd, double weight,
                                                           double M, bool training, float* k, float* c1,
                                                           float* c0, float* gw, float* gb) {
    const double kk = invstd * weight;
    const double sum_gxhat = B * invstd;
    if (gb) *gb = static_cast<float>(A);
    if (gw) *gw = static_cast<float>(sum_gxhat);
    *k = static_cast<float>(kk);
    *c1 = training ? static_cast<float>(-kk * invstd * sum_gxhat / M) : 0.0f;
    *c0 = training ? static_cast<float>(-kk * A / M) : 0.0f;
}

}  // namespace deepkern
