// Single-thread loops of the fused optimizer updates, written once in plain C++ and compiled
// per instruction set: optim.cpp (generic x86-64), optim_avx2.cpp, optim_avx512.cpp. The
// sqrt and divide in Adam/RMSprop make the width matter (AVX-512 is ~3x the SSE2 build).
// Internal linkage and no std:: templates (std::sqrt is the builtin), so no ISA-specific copy
// is shared across files. Every scalar is passed by value and the pointers are restrict:
// inside a capturing lambda, stores to p could alias the hyper-parameters and GCC then leaves
// the loop scalar.
#pragma once
#include <math.h>

#include <cstdint>

namespace deepkern::cpu::optim {

// One instruction set's loops; optim.cpp splits the work over threads and calls them.
struct Kernels {
    void (*sgd)(float* p, const float* grad, float* velocity, int64_t n, float lr, float momentum,
                float weight_decay, bool nesterov);
    void (*adam)(float* p, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                 float eps, float weight_decay, float c1, float c2);
    void (*rmsprop)(float* p, const float* grad, float* square_avg, int64_t n, float lr, float alpha, float eps,
                    float weight_decay);
};

const Kernels& generic_kernels();  // optim.cpp
const Kernels& avx2_kernels();     // optim_avx2.cpp
const Kernels& avx512_kernels();   // optim_avx512.cpp

namespace {


// p, grad, velocity are (n,); velocity null when momentum is 0
void sgd_span(float* __restrict p, const float* __restrict grad, float* __restrict velocity, int64_t n,
              float lr, float momentum, float weight_decay, bool nesterov) {
    if (velocity == nullptr) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) p[i] -= lr * (grad[i] + weight_decay * p[i]);
    } else if (nesterov) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
            const float g = grad[i] + weight_decay * p[i];
            const float v = momentum * velocity[i] + g;
            velocity[i] = v;
            p[i] -= lr * (g + momentum * v);
        }
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
            const float g = grad[i] + weight_decay * p[i];
            const float v = momentum * velocity[i] + g;
            velocity[i] = v;
            p[i] -= lr * v;
        }
    }
}

// p, grad, m, v are (n,); c1, c2 are the bias corrections 1 / (1 - beta^step)
void adam_span(float* __restrict p, const float* __restrict grad, float* __restrict m, float* __restrict v,
               int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float c1, float c2) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float g = grad[i] + weight_decay * p[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * c1) / (sqrtf(vi * c2) + eps);
    }
}

// p, grad, square_avg are (n,)
void rmsprop_span(float* __restrict p, const float* __restrict grad, float* __restrict square_avg, int64_t n,
                  float lr, float alpha, float eps, float weight_decay) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float g = grad[i] + weight_decay * p[i];
        const float s = alpha * square_avg[i] + (1.0f - alpha) * g * g;
        square_avg[i] = s;
        p[i] -= lr * g / (sqrtf(s) + eps);
    }
}

inline Kernels make_kernels() {
    Kernels k;
    k.sgd = sgd_span;
    k.adam = adam_span;
    k.rmsprop = rmsprop_span;
    return k;
}

}  // namespace
}  // namespace deepkern::cpu::optim
