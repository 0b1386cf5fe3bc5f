// relu and (log_)softmax over any axis, viewed as (outer, dim, inner): thread split and
// instruction-set dispatch. The single-thread kernels live in activation_rows.hpp, compiled
// three times (generic here, activation_avx2.cpp, activation_avx512.cpp).
//
// These ops are memory-bound on large arrays (relu moves 8 bytes per element, softmax 8,
// their backwards 12), so the kernels make one pass over memory: softmax along the last axis
// works row by row, each row re-read from L1; a strided axis is handled as (dim, 256-column)
// slabs so every inner loop is contiguous.
#include "cpu/activation.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "common/parallel.hpp"
#include "cpu/activation_rows.hpp"

namespace deepkern::cpu {

namespace act {
const Kernels& generic_kernels() {
    static const Kernels k = make_kernels("generic");
    return k;
}
}  // namespace act

namespace {

// ------------------------------------------------------------------ variant choice
bool cpu_has(const std::string& name) {
    __builtin_cpu_init();
    if (name == "generic") return true;
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (name == "avx2") return avx2;
    if (name == "avx512")
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    return false;
}

const act::Kernels* kernels_by_name(const std::string& name, const char* who) {
    if (name == "auto") {
        if (cpu_has("avx512")) return &act::avx512_kernels();
        if (cpu_has("avx2")) return &act::avx2_kernels();
        return &act::generic_kernels();
    }
    if (name != "avx512" && name != "avx2" && name != "generic")
        throw std::invalid_argument(std::string(who) + ": unknown activation variant '" + name +
                                    "' (expected avx512, avx2, generic or auto)");
    if (!cpu_has(name))
        throw std::invalid_argument(std::string(who) + ": activation variant '" + name +
                                    "' is not supported by this CPU");
    if (name == "avx512") return &act::avx512_kernels();
    if (name == "avx2") return &act::avx2_kernels();
    return &act::generic_kernels();
}

// The active kernels: DEEPKERN_ACTIVATION when set (a bad value is reported by every call
// until set_activation_variant fixes it), else the best the CPU supports.
struct VariantState {
    std::atomic<const act::Kernels*> active{nullptr};
    std::string env_error;
    VariantState() {
        const char* env = std::getenv("DEEPKERN_ACTIVATION");
        try {
            active = kernels_by_name(env && *env ? env : "auto", "DEEPKERN_ACTIVATION");
        } catch (const std::invalid_argument& e) {
            env_error = e.what();
        }
    }
};

VariantState& state() {
    static VariantState s;
    return s;
}

const act::Kernels& K() {
    const act::Kernels* k = state().active.load(std::memory_order_acquire);
    if (k == nullptr) throw std::invalid_argument(state().env_error);
    return *k;
}

// ------------------------------------------------------------------ strided axis
using ColsFn = void (*)(const float*, float*, int64_t, int64_t, int64_t);
using ColsBwdFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t);

// x, y are (outer, dim, inner) with inner > 1: tasks are (o, block of <= kColBlock columns)
void strided_forward(ColsFn fn, const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    const int64_t blocks = (inner + act::kColBlock - 1) / act::kColBlock;
    const int64_t tasks = outer * blocks;
#pragma omp parallel for schedule(static) if (worth_parallel(outer * dim * inner))
    for (int64_t t = 0; t < tasks; ++t) {
        const int64_t o = t / blocks, c0 = (t % blocks) * act::kColBlock;
        const int64_t cols = inner - c0 < act::kColBlock ? inner - c0 : act::kColBlock;
        const int64_t base = o * dim * inner + c0;
        fn(x + base, y + base, dim, inner, cols);
    }
}

void strided_backward(ColsBwdFn fn, const float* gy, const float* y, float* gx, int64_t outer, int64_t dim,
                      int64_t inner) {
    const int64_t blocks = (inner + act::kColBlock - 1) / act::kColBlock;
    const int64_t tasks = outer * blocks;
#pragma omp parallel for schedule(static) if (worth_parallel(outer * dim * inner))
    for (int64_t t = 0; t < tasks; ++t) {
        const int64_t o = t / blocks, c0 = (t % blocks) * act::kColBlock;
        const int64_t cols = inner - c0 < act::kColBlock ? inner - c0 : act::kColBlock;
        const int64_t base = o * dim * inner + c0;
        fn(gy + base, y + base, gx + base, dim, inner, cols);
    }
}

}  // namespace

std::string activation_variant() { return K().name; }

void set_activation_variant(const std::string& name) {
    state().active.store(kernels_by_name(name, "set_activation_variant"), std::memory_order_release);
}

// ------------------------------------------------------------------ relu
// x, y are (n,)
void relu_forward(const float* x, float* y, int64_t n) {
    const auto fn = K().relu;
    parallel_ranges(n, n, 16, [&](int64_t b, int64_t e) { fn(x + b, y + b, e - b); });
}

// gy, x, gx are (n,)
void relu_backward(const float* gy, const float* x, float* gx, int64_t n) {
    const auto fn = K().relu_backward;
    parallel_ranges(n, n, 16, [&](int64_t b, int64_t e) { fn(gy + b, x + b, gx + b, e - b); });
}

// ------------------------------------------------------------------ softmax family
// x, y are (outer, dim, inner); the softmax runs along dim
void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    const act::Kernels& k = K();
    if (inner == 1) {
        parallel_ranges(outer, outer * dim, 1, [&](int64_t b, int64_t e) {
            k.softmax_rows(x + b * dim, y + b * dim, e - b, dim);
        });
    } else {
        strided_forward(k.softmax_cols, x, y, outer, dim, inner);
    }
}

void log_softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    const act::Kernels& k = K();
    if (inner == 1) {
        parallel_ranges(outer, outer * dim, 1, [&](int64_t b, int64_t e) {
            k.log_softmax_rows(x + b * dim, y + b * dim, e - b, dim);
        });
    } else {
        strided_forward(k.log_softmax_cols, x, y, outer, dim, inner);
    }
}

// gx = y * (gy - sum(gy * y)), all (outer, dim, inner)
void softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner) {
    const act::Kernels& k = K();
    if (inner == 1) {
        parallel_ranges(outer, outer * dim, 1, [&](int64_t b, int64_t e) {
            k.softmax_backward_rows(gy + b * dim, y + b * dim, gx + b * dim, e - b, dim);
        });
    } else {
        strided_backward(k.softmax_backward_cols, gy, y, gx, outer, dim, inner);
    }
}

// gx = gy - exp(y) * sum(gy), all (outer, dim, inner)
void log_softmax_backward(const float* gy, const float* y, float* gx, int64_t outer, int64_t dim, int64_t inner) {
    const act::Kernels& k = K();
    if (inner == 1) {
        parallel_ranges(outer, outer * dim, 1, [&](int64_t b, int64_t e) {
            k.log_softmax_backward_rows(gy + b * dim, y + b * dim, gx + b * dim, e - b, dim);
        });
    } else {
        strided_backward(k.log_softmax_backward_cols, gy, y, gx, outer, dim, inner);
    }
}

}  // namespace deepkern::cpu
