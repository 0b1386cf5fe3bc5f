// relu and (log_)softmax over any axis, viewed as (outer, dim, inner): thread split and
// instruction-set dispatch. The single-thread kernels live in activation_rows.hpp, compiled
// three times (generic here, activation_avx2.cpp, activation_avx512.cpp).
//
// These ops are memory-bound on large arrays (relu moves 8 bytes per element, softmax 8,
// their backwards 12), so the kernels make one pass over memory: softmax along the last axis
// works row by row, each row re-read from L1; a strided axis is handled as (dim, 256-column)
// slabs so every inner loop is contiguous.
#include "cpu/activation.hpp"

#include "common/parallel.hpp"
#include "cpu/activation_rows.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {

namespace act {
const Kernels& generic_kernels() {
    static const Kernels k = make_kernels();
    return k;
}
}  // namespace act

namespace {

// The kernel table of the active SIMD variant (simd_variant.cpp)
const act::Kernels& K() {
    switch (simd_isa()) {
        case SimdIsa::avx512: return act::avx512_kernels();
        case SimdIsa::avx2: return act::avx2_kernels();
        default: return act::generic_kernels();
    }
}

// ------------------------------------------------------------------ strided axis
using ColsFn = void (*)(const float*, float*, int64_t, int64_t, int64_t);
using ColsBwdFn = void (*)(const float*, const float*, float*, int64_t, int64_t, int64_t);

// x, y are (outer, dim, inner) with inner > 1: tasks are (o, block of <= kColBlock columns)
void strided_forward(ColsFn fn, const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    const int64_t blocks = (inner + act::kColBlock - 1) / act::kColBlock;
    const int64_t tasks = outer * blocks;
    parallel_ranges(tasks, outer * dim * inner, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t o = t / blocks, c0 = (t % blocks) * act::kColBlock;
            const int64_t cols = inner - c0 < act::kColBlock ? inner - c0 : act::kColBlock;
            const int64_t base = o * dim * inner + c0;
            fn(x + base, y + base, dim, inner, cols);
        }
    });
}

void strided_backward(ColsBwdFn fn, const float* gy, const float* y, float* gx, int64_t outer, int64_t dim,
                      int64_t inner) {
    const int64_t blocks = (inner + act::kColBlock - 1) / act::kColBlock;
    const int64_t tasks = outer * blocks;
    parallel_ranges(tasks, outer * dim * inner, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t o = t / blocks, c0 = (t % blocks) * act::kColBlock;
            const int64_t cols = inner - c0 < act::kColBlock ? inner - c0 : act::kColBlock;
            const int64_t base = o * dim * inner + c0;
            fn(gy + base, y + base, gx + base, dim, inner, cols);
        }
    });
}

}  // namespace

// ------------------------------------------------------------------ relu
// Outputs from this many floats (8 MiB) are written with streaming stores (Kernels::relu_stream,
// relu_backward_stream):
// with the input they pass the caches' share of the two cores, and the output's read-for-ownership
// would be a third stream of memory traffic.
constexpr int64_t kStreamFloats = int64_t{1} << 21;

// x, y are (n,)
void relu_forward(const float* x, float* y, int64_t n) {
    const auto fn = n >= kStreamFloats ? K().relu_stream : K().relu;
    parallel_ranges(n, n, 16, [&](int64_t b, int64_t e) { fn(x + b, y + b, e - b); });
}

// gy, x, gx are (n,)
void relu_backward(const float* gy, const float* x, float* gx, int64_t n) {
    const auto fn = n >= kStreamFloats ? K().relu_backward_stream : K().relu_backward;
    parallel_ranges(n, n, 16, [&](int64_t b, int64_t e) { fn(gy + b, x + b, gx + b, e - b); });
}

// ------------------------------------------------------------------ softmax family
// x, y are (outer, dim, inner); the softmax runs along dim
void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner) {
    if (outer == 0 || dim == 0 || inner == 0) return;  // nothing to write (the column kernels read row 0)
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
    if (outer == 0 || dim == 0 || inner == 0) return;  // nothing to write (the column kernels read row 0)
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
    if (outer == 0 || dim == 0 || inner == 0) return;  // nothing to write (the column kernels read row 0)
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
    if (outer == 0 || dim == 0 || inner == 0) return;  // nothing to write (the column kernels read row 0)
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
