// Fused optimizer updates: one pass over param, grad and state, in place.
// Memory-bound (Adam moves 28 bytes per parameter): each thread streams one contiguous piece
// through the active SIMD variant's loop (optim_kernels.hpp); small parameter tensors
// (biases) stay on the calling thread.
#include "cpu/optim.hpp"

#include <cmath>

#include "common/parallel.hpp"
#include "cpu/optim_kernels.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {

namespace optim {
const Kernels& generic_kernels() {
    static const Kernels k = make_kernels();
    return k;
}
}  // namespace optim

namespace {

const optim::Kernels& K() {
    switch (simd_isa()) {
        case SimdIsa::avx512: return optim::avx512_kernels();
        case SimdIsa::avx2: return optim::avx2_kernels();
        default: return optim::generic_kernels();
    }
}

}  // namespace

void sgd_update(float* p, const float* grad, float* velocity, int64_t n,
                float lr, float momentum, float weight_decay, bool nesterov) {
    const auto fn = K().sgd;
    parallel_ranges(n, n, 16, [=](int64_t b, int64_t e) {
        fn(p + b, grad + b, velocity ? velocity + b : nullptr, e - b, lr, momentum, weight_decay, nesterov);
    });
}

void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, int64_t step,
                 float lr, float beta1, float beta2, float eps, float weight_decay) {
    const float c1 = 1.0f / static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step)));
    const float c2 = 1.0f / static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step)));
    const auto fn = K().adam;
    parallel_ranges(n, n, 16, [=](int64_t b, int64_t e) {
        fn(p + b, grad + b, m + b, v + b, e - b, lr, beta1, beta2, eps, weight_decay, c1, c2);
    });
}

void rmsprop_update(float* p, const float* grad, float* square_avg, int64_t n,
                    float lr, float alpha, float eps, float weight_decay) {
    const auto fn = K().rmsprop;
    parallel_ranges(n, n, 16, [=](int64_t b, int64_t e) {
        fn(p + b, grad + b, square_avg + b, e - b, lr, alpha, eps, weight_decay);
    });
}

}  // namespace deepkern::cpu
