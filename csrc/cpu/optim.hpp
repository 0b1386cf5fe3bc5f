// Fused optimizer updates, in place over flat (n,) arrays.
#pragma once
#include <cstdint>

namespace deepkern::cpu {

// g = grad + wd*p; v = momentum*v + g; p -= lr * (nesterov ? g + momentum*v : v).
// velocity may be null when momentum == 0 (then p -= lr * g).
void sgd_update(float* p, const float* grad, float* velocity, int64_t n,
                float lr, float momentum, float weight_decay, bool nesterov);
// Adam with bias correction at step (1-based); weight decay added to the gradient (L2).
void adam_update(float* p, const float* grad, float* m, float* v, int64_t n, int64_t step,
                 float lr, float beta1, float beta2, float eps, float weight_decay);
// s = alpha*s + (1-alpha)*g^2; p -= lr * g / (sqrt(s) + eps)
void rmsprop_update(float* p, const float* grad, float* square_avg, int64_t n,
                    float lr, float alpha, float eps, float weight_decay);

// One parameter of a multi-tensor update: its values, gradient and state buffers, each (n,).
struct ParamSpan {
    float* p;
    const float* grad;
    float* s0;  // SGD velocity (null without momentum), Adam m, RMSprop square_avg
    float* s1;  // Adam v; null otherwise
    int64_t n;
};

// The updates above over `count` parameters in one call (the same bits as one call each).
// With `disjoint` (no two parameters' arrays share memory) the threads split all the
// parameters' elements as one range, so the small tensors (biases) share the threads' work;
// otherwise the parameters are updated one after the other, each split as above.
void sgd_update_many(const ParamSpan* spans, int64_t count, bool disjoint, float lr, float momentum,
                     float weight_decay, bool nesterov);
void adam_update_many(const ParamSpan* spans, int64_t count, bool disjoint, int64_t step, float lr, float beta1,
                      float beta2, float eps, float weight_decay);
void rmsprop_update_many(const ParamSpan* spans, int64_t count, bool disjoint, float lr, float alpha, float eps,
                         float weight_decay);

}  // namespace deepkern::cpu
