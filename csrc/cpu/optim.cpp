// Fused optimizer updates: one pass over param, grad and state, in place.
// Memory-bound (Adam moves 28 bytes per parameter): each thread streams one contiguous piece
// through the active SIMD variant's loop (optim_kernels.hpp); small parameter tensors
// (biases) stay on the calling thread, unless they come in one call with the others (*_many).
#include "cpu/optim.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

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

// Bias corrections of Adam at `step`: 1 / (1 - beta^step), computed in double.
float bias_correction(float beta, int64_t step) {
    return 1.0f / static_cast<float>(1.0 - std::pow(static_cast<double>(beta), static_cast<double>(step)));
}

// f(span, b, e) for element ranges [b, e) covering every span. Disjoint spans: all their
// elements as one range cut over the threads (a piece may cover the end of one span and the
// start of the next); otherwise span after span, each cut on its own.
template <class F>
void for_spans(const ParamSpan* spans, int64_t count, bool disjoint, F&& f) {
    if (!disjoint) {
        for (int64_t s = 0; s < count; ++s) {
            const ParamSpan& sp = spans[s];
            parallel_ranges(sp.n, sp.n, 16, [&](int64_t b, int64_t e) { f(sp, b, e); });
        }
        return;
    }
    std::vector<int64_t> start(static_cast<size_t>(count) + 1, 0);  // start[s]: span s's first element
    for (int64_t s = 0; s < count; ++s) start[s + 1] = start[s] + spans[s].n;
    const int64_t total = start[count];
    parallel_ranges(total, total, 16, [&](int64_t b, int64_t e) {
        // the last span starting at or before b
        int64_t s = std::upper_bound(start.begin(), start.end(), b) - start.begin() - 1;
        for (; s < count && start[s] < e; ++s) {
            const int64_t lo = std::max(b, start[s]) - start[s], hi = std::min(e, start[s + 1]) - start[s];
            if (lo < hi) f(spans[s], lo, hi);
        }
    });
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
    const float c1 = bias_correction(beta1, step), c2 = bias_correction(beta2, step);
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

void sgd_update_many(const ParamSpan* spans, int64_t count, bool disjoint, float lr, float momentum,
                     float weight_decay, bool nesterov) {
    const auto fn = K().sgd;
    for_spans(spans, count, disjoint, [=](const ParamSpan& s, int64_t b, int64_t e) {
        fn(s.p + b, s.grad + b, s.s0 ? s.s0 + b : nullptr, e - b, lr, momentum, weight_decay, nesterov);
    });
}

void adam_update_many(const ParamSpan* spans, int64_t count, bool disjoint, int64_t step, float lr, float beta1,
                      float beta2, float eps, float weight_decay) {
    const float c1 = bias_correction(beta1, step), c2 = bias_correction(beta2, step);
    const auto fn = K().adam;
    for_spans(spans, count, disjoint, [=](const ParamSpan& s, int64_t b, int64_t e) {
        fn(s.p + b, s.grad + b, s.s0 + b, s.s1 + b, e - b, lr, beta1, beta2, eps, weight_decay, c1, c2);
    });
}

void rmsprop_update_many(const ParamSpan* spans, int64_t count, bool disjoint, float lr, float alpha, float eps,
                         float weight_decay) {
    const auto fn = K().rmsprop;
    for_spans(spans, count, disjoint, [=](const ParamSpan& s, int64_t b, int64_t e) {
        fn(s.p + b, s.grad + b, s.s0 + b, e - b, lr, alpha, eps, weight_decay);
    });
}

}  // namespace deepkern::cpu
