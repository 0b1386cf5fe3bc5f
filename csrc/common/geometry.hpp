// Sliding-window geometry of conv2d and pooling, shared by the CPU and CUDA kernels and their
// bindings: one definition of the shapes and of the checks that make every index in bounds.
// The checks run in 64 bits, so a huge padding or stride cannot wrap; the kernels index with
// 32-bit ints, so every size they see (padded extents, OH*OW, C*KH*KW) is checked to fit.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "common/errors.hpp"

namespace deepkern {

using IntPair = std::pair<int64_t, int64_t>;

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

namespace geometry {

constexpr int64_t kIndexLimit = std::numeric_limits<int>::max();

// value as an int, or ShapeError naming `what` when it does not fit the kernels' 32-bit indices
inline int fit(int64_t value, const char* what) {
    if (value > kIndexLimit)
        throw ShapeError(std::string(what) + ": " + std::to_string(value) +
                         " exceeds the kernels' 32-bit index limit (" + std::to_string(kIndexLimit) + ")");
    return static_cast<int>(value);
}

// Output length of a window of `k` sliding by `stride` over `size` padded by `pad` on each side
// (all already checked >= their minimum); ShapeError when the padded input is too large or the
// window does not fit it.
inline int window_out(int64_t size, int64_t k, int64_t stride, int64_t pad, const char* kernel_name) {
    const int64_t padded = size + 2 * pad;  // size, pad < 2**31: no 64-bit overflow
    fit(padded, "padding: the padded input size");
    if (k > padded) throw ShapeError(std::string(kernel_name) + ": kernel is larger than the padded input");
    return static_cast<int>((padded - k) / stride + 1);
}

inline void check_pair(const IntPair& p, int64_t minimum, const char* what) {
    if (p.first < minimum || p.second < minimum)
        throw ShapeError(std::string(what) + ": expected values >= " + std::to_string(minimum));
    fit(p.first, what);
    fit(p.second, what);
}

}  // namespace geometry

// x is (N, C, H, W), w is (OC, WC, KH, KW); throws ShapeError unless WC == C, stride >= 1,
// padding >= 0, the kernel fits the padded input and every derived size fits 32-bit indices.
inline Conv2dShape make_conv2d_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OC, int64_t WC,
                                     int64_t KH, int64_t KW, IntPair stride, IntPair padding) {
    using geometry::fit;
    if (WC != C) throw ShapeError("w: input channels differ from x");
    geometry::check_pair(stride, 1, "stride");
    geometry::check_pair(padding, 0, "padding");
    Conv2dShape s{fit(N, "x"), fit(C, "x"), fit(H, "x"), fit(W, "x"), fit(OC, "w"), fit(KH, "w"), fit(KW, "w"),
                  static_cast<int>(stride.first), static_cast<int>(stride.second),
                  static_cast<int>(padding.first), static_cast<int>(padding.second), 0, 0};
    s.OH = geometry::window_out(H, KH, stride.first, padding.first, "w");
    s.OW = geometry::window_out(W, KW, stride.second, padding.second, "w");
    // C*KH*KW in two 64-bit steps: each factor < 2**31, so neither product can overflow
    const char* rows = "w: C*KH*KW (rows of the im2col matrix)";
    fit(static_cast<int64_t>(fit(C * KH, rows)) * KW, rows);
    fit(static_cast<int64_t>(s.OH) * s.OW, "OH*OW (columns of the im2col matrix)");
    return s;
}

// x is (N, C, H, W); throws ShapeError unless kernel >= 1, stride >= 1,
// 0 <= padding <= kernel / 2, the kernel fits the padded input and every size fits 32-bit indices.
inline Pool2dShape make_pool2d_shape(int64_t N, int64_t C, int64_t H, int64_t W, IntPair kernel, IntPair stride,
                                     IntPair padding) {
    using geometry::fit;
    geometry::check_pair(kernel, 1, "kernel_size");
    geometry::check_pair(stride, 1, "stride");
    geometry::check_pair(padding, 0, "padding");
    if (padding.first > kernel.first / 2 || padding.second > kernel.second / 2)
        throw ShapeError("padding: expected 0 <= padding <= kernel_size / 2");
    Pool2dShape s{fit(N, "x"), fit(C, "x"), fit(H, "x"), fit(W, "x"),
                  static_cast<int>(kernel.first), static_cast<int>(kernel.second),
                  static_cast<int>(stride.first), static_cast<int>(stride.second),
                  static_cast<int>(padding.first), static_cast<int>(padding.second), 0, 0};
    s.OH = geometry::window_out(H, kernel.first, stride.first, padding.first, "kernel_size");
    s.OW = geometry::window_out(W, kernel.second, stride.second, padding.second, "kernel_size");
    return s;
}

}  // namespace deepkern
