// Portable GEMM micro-kernel (baseline x86-64, no ISA flags): a 4 x 8 tile of scalar
// accumulators. The fixed-width inner loops let the compiler use SSE2 where it can; this is
// the fallback for CPUs without AVX2/FMA and the variant tests compare the others against.
#include <array>

#include "cpu/gemm_kernels.hpp"

namespace deepkern::cpu::gemm {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 8;

using TileFn = void (*)(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep);

// C (R, n) = epilogue(A (R, K) @ B (K, n)), n <= 8; Full: n == 8
template <int R, bool ARows, bool Full>
void tile(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep) {
    float acc[R][kNR] = {};
    const float* a = op.A;
    const float* b = op.B;
    const int64_t as = op.a_stride, bs = op.b_stride;
    for (int k = 0; k < K; ++k) {
        float bv[kNR];
        for (int j = 0; j < kNR; ++j) bv[j] = (Full || j < n) ? b[j] : 0.0f;  // never read past n
        for (int r = 0; r < R; ++r) {
            const float ar = ARows ? a[r * as] : a[r];
            for (int j = 0; j < kNR; ++j) acc[r][j] += ar * bv[j];
        }
        a += ARows ? 1 : as;
        b += bs;
    }
    for (int r = 0; r < R; ++r) {
        float* c = C + r * ldc;
        for (int j = 0; j < n; ++j) {
            float x = acc[r][j];
            if (ep.beta != 0.0f) x += ep.beta * c[j];
            if (ep.bias_col) x += ep.bias_col[j];
            if (ep.bias_row) x += ep.bias_row[r];
            if (ep.relu) x = x > 0.0f ? x : 0.0f;
            c[j] = x;
        }
    }
}

// table[a_rows][full][rows - 1]
using Table = std::array<std::array<std::array<TileFn, kMR>, 2>, 2>;

template <int R>
void fill(Table& t) {
    if constexpr (R > 0) {
        t[0][0][R - 1] = &tile<R, false, false>;
        t[0][1][R - 1] = &tile<R, false, true>;
        t[1][0][R - 1] = &tile<R, true, false>;
        t[1][1][R - 1] = &tile<R, true, true>;
        fill<R - 1>(t);
    }
}

const Table& table() {
    static const Table t = [] {
        Table x{};
        fill<kMR>(x);
        return x;
    }();
    return t;
}

void kernel(int K, const Operands& op, float* C, int64_t ldc, int m, int n, const Epilogue& ep) {
    table()[op.a_rows ? 1 : 0][n == kNR ? 1 : 0][m - 1](K, op, C, ldc, n, ep);
}

}  // namespace

const KernelSet& scalar_kernels() {
    static const KernelSet k{"scalar", kMR, kNR, 256, 256, 2016, &kernel};
    return k;
}

}  // namespace deepkern::cpu::gemm
