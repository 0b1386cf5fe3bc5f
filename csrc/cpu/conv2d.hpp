// conv2d (NCHW cross-correlation), forward and backward.
#pragma once

namespace deepkern::cpu {

struct Conv2dShape {
    int N, C, H, W;      // input
    int OC, KH, KW;      // weight is (OC, C, KH, KW)
    int SH, SW, PH, PW;  // stride, zero padding
    int OH, OW;          // output
};

// x is (N, C, H, W), w is (OC, C, KH, KW), bias (OC,) or null, y is (N, OC, OH, OW)
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);

// gy is (N, OC, OH, OW); gx like x, gw like w, gb (OC,) or null; all overwritten
void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w,
                     float* gx, float* gw, float* gb);

}  // namespace deepkern::cpu
