// Sliding-window geometry of conv2d and pooling, shared by the CPU and CUDA kernels and their
// bindings: one definition of the shapes and of the checks that make every index in bounds.
#pragma once

#include <utility>

#include "common/errors.hpp"

namespace deepkern {

using IntPair = std::pair<int, int>;

struct Conv2dShape {
    int N, C, H, W;      // input
    int OC, KH, KW;      // weight is (OC, C, KH, KW)
    int SH, SW, PH, PW;  // stride, zero padding
    int OH, OW;          // output
};

struct Pool2dShape {
    int N, C, H, W;
    int KH, KW, SH, SW, PH, PW;
    int OH, OW;
};

// x is (N, C, H, W), w is (OC, WC, KH, KW); throws ShapeError unless WC == C, stride >= 1,
// padding >= 0 and the kernel fits the padded input.
inline Conv2dShape make_conv2d_shape(int N, int C, int H, int W, int OC, int WC, int KH, int KW,
                                     IntPair stride, IntPair padding) {
    Conv2dShape s{N, C, H, W, OC, KH, KW, stride.first, stride.second, padding.first, padding.second, 0, 0};
    if (WC != C) throw ShapeError("w: input channels differ from x");
    if (s.SH < 1 || s.SW < 1) throw ShapeError("stride: expected values >= 1");
    if (s.PH < 0 || s.PW < 0) throw ShapeError("padding: expected values >= 0");
    if (KH > H + 2 * s.PH || KW > W + 2 * s.PW) throw ShapeError("w: kernel is larger than the padded input");
    s.OH = (H + 2 * s.PH - KH) / s.SH + 1;
    s.OW = (W + 2 * s.PW - KW) / s.SW + 1;
    return s;
}

// x is (N, C, H, W); throws ShapeError unless kernel >= 1, stride >= 1,
// 0 <= padding <= kernel / 2 and the kernel fits the padded input.
inline Pool2dShape make_pool2d_shape(int N, int C, int H, int W, IntPair kernel, IntPair stride,
                                     IntPair padding) {
    Pool2dShape s{N, C, H, W, kernel.first, kernel.second, stride.first, stride.second,
                  padding.first, padding.second, 0, 0};
    if (s.KH < 1 || s.KW < 1) throw ShapeError("kernel_size: expected values >= 1");
    if (s.SH < 1 || s.SW < 1) throw ShapeError("stride: expected values >= 1");
    if (s.PH < 0 || s.PW < 0 || s.PH > s.KH / 2 || s.PW > s.KW / 2)
        throw ShapeError("padding: expected 0 <= padding <= kernel_size / 2");
    if (s.KH > H + 2 * s.PH || s.KW > W + 2 * s.PW)
        throw ShapeError("kernel_size: kernel is larger than the padded input");
    s.OH = (H + 2 * s.PH - s.KH) / s.SH + 1;
    s.OW = (W + 2 * s.PW - s.KW) / s.SW + 1;
    return s;
}

}  // namespace deepkern
