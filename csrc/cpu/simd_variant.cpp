// Run-time choice of the instruction-set variant of the memory-bound kernels.
#include "cpu/simd_variant.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace deepkern::cpu {
namespace {

bool cpu_has(SimdIsa isa) {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    switch (isa) {
        case SimdIsa::generic: return true;
        case SimdIsa::avx2: return avx2;
        case SimdIsa::avx512:
            // the *_avx512.cpp files are built with -mavx512f/dq/bw/vl
            return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    return false;
}

const char* name_of(SimdIsa isa) {
    switch (isa) {
        case SimdIsa::avx512: return "avx512";
        case SimdIsa::avx2: return "avx2";
        default: return "generic";
    }
}

SimdIsa parse(const std::string& name, const char* who) {
    if (name == "auto") return cpu_has(SimdIsa::avx512) ? SimdIsa::avx512
                             : cpu_has(SimdIsa::avx2)   ? SimdIsa::avx2
                                                        : SimdIsa::generic;
    SimdIsa isa;
    if (name == "avx512") isa = SimdIsa::avx512;
    else if (name == "avx2") isa = SimdIsa::avx2;
    else if (name == "generic") isa = SimdIsa::generic;
    else
        throw std::invalid_argument(std::string(who) + ": unknown SIMD variant '" + name +
                                    "' (expected avx512, avx2, generic or auto)");
    if (!cpu_has(isa))
        throw std::invalid_argument(std::string(who) + ": SIMD variant '" + name + "' is not supported by this CPU");
    return isa;
}

constexpr int kUnset = -1;

struct State {
    std::atomic<int> isa{kUnset};
    std::string env_error;
    State() {
        const char* env = std::getenv("DEEPKERN_SIMD");
        try {
            isa = static_cast<int>(parse(env && *env ? env : "auto", "DEEPKERN_SIMD"));
        } catch (const std::invalid_argument& e) {
            env_error = e.what();
        }
    }
};

State& state() {
    static State s;
    return s;
}

}  // namespace

SimdIsa simd_isa() {
    const int isa = state().isa.load(std::memory_order_relaxed);
    if (isa == kUnset) throw std::invalid_argument(state().env_error);
    return static_cast<SimdIsa>(isa);
}

std::string simd_variant() { return name_of(simd_isa()); }

void set_simd_variant(const std::string& name) {
    state().isa.store(static_cast<int>(parse(name, "set_simd_variant")), std::memory_order_relaxed);
}

}  // namespace deepkern::cpu
