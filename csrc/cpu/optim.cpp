// Fused optimizer updates: one pass over param, grad and state, in place.
#include "cpu/optim.hpp"

#include <cmath>

#include "common/parallel.hpp"

namespace deepkern::cpu {

void sgd_update(float* p, const float* grad, float* velocity, int64_t n,
                float lr, float momentum, float weight_decay, bool nesterov) {
#pragma omp parallel for simd schedule(static) if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) {
        const float g = grad[i] + weight_decay * p[i];
        float step = g;
        if (velocity) {
            const float v = momentum * velocity[i] + g;
            velocity[i] = v;
            step = nesterov ? g + momentum * v : v;
        }
        p[i] -= lr * step;
    }
}

void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, int64_t step,
                 float lr, float beta1, float beta2, float eps, float weight_decay) {
    const float c1 = 1.0f / static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step)));
    const float c2 = 1.0f / static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step)));
#pragma omp parallel for simd schedule(static) if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) {
        const float g = grad[i] + weight_decay * p[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * c1) / (std::sqrt(vi * c2) + eps);
    }
}

void rmsprop_update(float* p, const float* grad, float* square_avg, int64_t n,
                    float lr, float alpha, float eps, float weight_decay) {
#pragma omp parallel for simd schedule(static) if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) {
        const float g = grad[i] + weight_decay * p[i];
        const float s = alpha * square_avg[i] + (1.0f - alpha) * g * g;
        square_avg[i] = s;
        p[i] -= lr * g / (std::sqrt(s) + eps);
    }
}

}  // namespace deepkern::cpu
