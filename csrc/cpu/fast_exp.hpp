// fast_exp: a branch-free float exp that compilers vectorise, for the softmax family and the
// losses. Internal linkage (anonymous namespace), no std:: templates: safe to include from
// files compiled for different instruction sets (see activation_rows.hpp).
#pragma once
#include <cstdint>
#include <cstring>

// Comparisons in if-converted (vectorised) loops may be evaluated speculatively; with the
// default -ftrapping-math GCC refuses that below AVX-512 and leaves the exp loops scalar.
// The kernels never unmask FP exceptions, so nothing observable changes.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

namespace deepkern::cpu {
namespace {

inline float as_float(int32_t i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}

inline int32_t as_int(float f) {
    int32_t i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}

// exp(x) within 1 ulp (Cephes expf polynomial; max relative error 8.3e-8 measured over
// [-87, 88] against double exp) for x in [-87, 88]; x is clamped to that
// range (so exp(-1000) gives ~1.6e-38, not 0: no subnormals, no overflow); NaN stays NaN.
// n = round(x / ln2) with the 1.5*2^23 trick, r = x - n*ln2 in two parts, exp(r) by a
// degree-7 polynomial, 2^n put straight into the exponent bits.
inline float fast_exp(float x) {
    constexpr float kLo = -87.0f, kHi = 88.0f;
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
    constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
    x = x < kLo ? kLo : x;
    x = x > kHi ? kHi : x;
    const float t = x * kLog2e + kRound;
    const float n = t - kRound;                        // round(x * log2(e)) as a float
    const int32_t ni = as_int(t) - as_int(kRound);     // ... and as an int
    float r = x - n * kLn2Hi;
    r = r - n * kLn2Lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * as_float((ni + 127) << 23);
}

}  // namespace
}  // namespace deepkern::cpu

#pragma GCC pop_options
