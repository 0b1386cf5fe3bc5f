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

}  // namespace deepkern::cpu
