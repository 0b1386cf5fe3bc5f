// cross_entropy: log-softmax + NLL fused, mean over the batch.
#pragma once
#include <cstdint>

namespace deepkern::cpu {

// logits is (N, C), labels (N,) in [0, C); returns the mean loss
float cross_entropy_forward(const float* logits, const int64_t* labels, int N, int C);
// glogits (N, C) = grad * (softmax(logits) - onehot(labels)) / N
void cross_entropy_backward(const float* logits, const int64_t* labels, float* glogits,
                            int N, int C, float grad);

}  // namespace deepkern::cpu
