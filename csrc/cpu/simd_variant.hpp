// Which instruction-set build of the memory-bound kernels runs (relu, the softmax family, batch
// norm, the optimizer updates). Each of those families is compiled three times from one ISA-neutral
// header (generic x86-64, *_avx2.cpp, *_avx512.cpp); this picks one at run time.
#pragma once
#include <string>

namespace deepkern::cpu {

enum class SimdIsa { generic, avx2, avx512 };

// The active variant: DEEPKERN_SIMD when set at load (avx512, avx2, generic, auto), else the
// best the CPU supports. A bad DEEPKERN_SIMD makes every kernel call throw until it is fixed
// with set_simd_variant.
SimdIsa simd_isa();
std::string simd_variant();
// "avx512", "avx2", "generic" or "auto"; unknown names and ones the CPU lacks throw
// std::invalid_argument (ValueError in Python).
void set_simd_variant(const std::string& name);

}  // namespace deepkern::cpu
