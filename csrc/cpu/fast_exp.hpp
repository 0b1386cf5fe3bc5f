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

inline float as_float(uint32_t i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}

inline uint32_t as_bits(float f) {
    uint32_t i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}

// exp(x) within 1 ulp (Cephes expf polynomial; max relative error 8.3e-8 measured over
// [-87, 88] against double exp) for x in [-87, 88]. Below -87 the result is exactly 0 (flushed:
// no subnormals; exp(-inf) is 0, so -inf logits get exact zeros); above 88 it is exp(88) (no
// overflow); NaN stays NaN. n = round(x / ln2) with the 1.5*2^23 trick, r = x - n*ln2 in two
// parts, exp(r) by a degree-7 polynomial, 2^n put straight into the exponent bits. The integer
// steps are unsigned, so a NaN's arbitrary bits wrap (defined) instead of overflowing.
inline float fast_exp(float x) {
    constexpr float kLo = -87.0f, kHi = 88.0f;
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
    constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
    const bool underflow = x < kLo;
    x = underflow ? kLo : x;
    x = x > kHi ? kHi : x;
    const float t = x * kLog2e + kRound;
    const float n = t - kRound;                        // round(x * log2(e)) as a float
    const uint32_t ni = as_bits(t) - as_bits(kRound);  // ... and as an int (two's complement)
    float r = x - n * kLn2Hi;
    r = r - n * kLn2Lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const float e = p * as_float((ni + 127u) << 23);
    return underflow ? 0.0f : e;
}

}  // namespace
}  // namespace deepkern::cpu

#pragma GCC pop_options
