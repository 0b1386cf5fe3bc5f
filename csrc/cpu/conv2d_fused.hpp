// The fused conv layers: relu(conv2d(x, w) + bias), optionally followed by a 2x2 / stride-2
// max-pool, with the pooling done on each image's conv output while it is in cache.
#pragma once

#include <cstdint>

#include "cpu/conv2d.hpp"

namespace deepkern::cpu {

// x is (N, C, H, W), w is (OC, C, KH, KW), bias (OC,) or null.
// pool false: y (N, OC, OH, OW) = relu(conv2d(x, w) + bias) (the ReLU in the GEMM's store); route
//   is not used.
// pool true: y (N, OC, OH / 2, OW / 2) = max_pool2d(relu(conv2d(x, w) + bias), 2) and route (same
//   shape, pool.hpp's max2x2_relu_plane: where each output's gradient goes); the un-pooled
//   output is never stored.
// bf16: the conv's products in bf16 (conv2d_bf16.hpp; throws without AVX512-BF16).
void conv2d_relu_forward(const Conv2dShape& s, bool pool, const float* x, const float* w, const float* bias,
                         float* y, uint8_t* route, bool bf16 = false);

// Gradients of conv2d_relu_forward: gy is like its y. pool false: y (the forward's output) masks
// gy (it passes where y > 0); pool true: route sends each gy to its window's maximum. Each
// group of images' conv output gradient is built in the conv backward's scratch (never as a
// whole array). gx (null: not wanted), gw, gb (null: not wanted) as conv2d_backward.
void conv2d_relu_backward(const Conv2dShape& s, bool pool, const float* gy, const float* y, const uint8_t* route,
                          const float* x, const float* w, float* gx, float* gw, float* gb, bool bf16 = false);

}  // namespace deepkern::cpu
