// cross_entropy (fused log-softmax + NLL, mean over the batch) on the GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace deepkern::cuda {

// logits is (N, C); labels (N,) are int64 (labels_int64) or int32; row_loss is (N,) scratch;
// loss points at 2 floats: the mean, then the count of labels outside [0, C). Such a label makes
// its row's loss (so the mean) NaN rather than a bad read; the count says why.
void cross_entropy_forward(const float* logits, const void* labels, bool labels_int64, float* row_loss,
                           float* loss, int N, int C, cudaStream_t stream);
// glogits (N, C) = grad * (softmax(logits) - onehot(labels)) / N
void cross_entropy_backward(const float* logits, const void* labels, bool labels_int64, float* glogits, int N,
                            int C, float grad, cudaStream_t stream);

}  // namespace deepkern::cuda
