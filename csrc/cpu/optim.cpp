// Fused optimizer updates: one pass over param, grad and state, in place.
// Memory-bound (Adam moves 28 bytes per parameter): each thread streams one contiguous piece,
// the loop inside vectorised; small parameter tensors (biases) stay on the calling thread.
#include "cpu/optim.hpp"

#include <cmath>

#include "common/parallel.hpp"

namespace deepkern::cpu {

// p, grad, velocity are (n,)
void sgd_update(float* p, const float* grad, float* velocity, int64_t n,
                float lr, float momentum, float weight_decay, bool nesterov) {
    parallel_ranges(n, n, 16, [&](int64_t b, int64_t e) {
        if (velocity == nullptr) {
#pragma omp simd
            for (int64_t i = b; i < e; ++i) p[i] -= lr * (grad[i] + weight_decay * p[i]);
        } else if (nesterov) {
#pragma omp simd
            for (int64_t i = b; i < e; ++i) {
                const float g = grad[i] + weight_decay * p[i];
                const float v = momentum * velocity[i] + g;
                velocity[i] = v;
                p[i] -= lr * (g + momentum * v);
            }
        } else {
#pragma omp simd
            for (int64_t i = b; i < e; ++i) {
                const float g = grad[i] + weight_decay * p[i];
                const float v = momentum * velocity[i] + g;
                velocity[i] = v;
                p[i] -= lr * v;
            }
        }
    });
}

// p, grad, m, v are (n,)
void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, int64_t step,
                 float lr, float beta1, float beta2, float eps, float weight_decay) {
    const float c1 = 1.0f / static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step)));
    const float c2 = 1.0f / static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step)));
    parallel_ranges(n, n, 16, [&](int64_t b, int64_t e) {
#pragma omp simd
        for (int64_t i = b; i < e; ++i) {
            const float g = grad[i] + weight_decay * p[i];
            const float mi = beta1 * m[i] + (1.0f - beta1) * g;
            const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
            m[i] = mi;
            v[i] = vi;
            p[i] -= lr * (mi * c1) / (std::sqrt(vi * c2) + eps);
        }
    });
}

// p, grad, square_avg are (n,)
void rmsprop_update(float* p, const float* grad, float* square_avg, int64_t n,
                    float lr, float alpha, float eps, float weight_decay) {
    parallel_ranges(n, n, 16, [&](int64_t b, int64_t e) {
#pragma omp simd
        for (int64_t i = b; i < e; ++i) {
            const float g = grad[i] + weight_decay * p[i];
            const float s = alpha * square_avg[i] + (1.0f - alpha) * g * g;
            square_avg[i] = s;
            p[i] -= lr * g / (std::sqrt(s) + eps);
        }
    });
}

}  // namespace deepkern::cpu
