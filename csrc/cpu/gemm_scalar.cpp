// Portable GEMM micro-kernel (baseline x86-64, no ISA flags): a 4 x 8 tile of scalar
// accumulators. The fixed-width inner loops let the compiler use SSE2 where it can; this is
// the fallback for CPUs without AVX2/FMA and the variant tests compare the others against.
#include <array>

#include "cpu/gemm_kernels.hpp"

namespace deepkern::cpu::gemm {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 8;

// Operand modes: A sliver strided by k (packed or transposed A) and B rows strided; A read by
// rows in place; B rows at per-k offsets.
constexpr int kStrided = 0, kARows = 1, kBOffsets = 2;

using TileFn = void (*)(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep);

// C (R, n) = epilogue(A (R, K) @ B (K, n)), n <= 8; Full: n == 8
template <int R, int Mode, bool Full>
void tile(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep) {
    float acc[R][kNR] = {};
    const float* a = op.A;
    const float* b = op.B;
    const int64_t as = op.a_stride, bs = op.b_stride;
    const int64_t* boff = op.b_offsets;
    for (int k = 0; k < K; ++k) {
        if constexpr (Mode == kBOffsets) b = op.B + boff[k];
        float bv[kNR];
        for (int j = 0; j < kNR; ++j) bv[j] = (Full || j < n) ? b[j] : 0.0f;  // never read past n
        for (int r = 0; r < R; ++r) {
            const float ar = Mode == kARows ? a[r * as] : a[r];
            for (int j = 0; j < kNR; ++j) acc[r][j] += ar * bv[j];
        }
        a += Mode == kARows ? 1 : as;
        if constexpr (Mode != kBOffsets) b += bs;
    }
    for (int r = 0; r < R; ++r) {
        float* c = C + r * ldc;
        for (int j = 0; j < n; ++j) {
            float x = acc[r][j];
            if (ep.beta != 0.0f) x += ep.beta * c[j];
            if (ep.bias_col) x += ep.bias_col[j];
            if (ep.bias_row) x += ep.bias_row[r];
            if (ep.relu) x = x < 0.0f ? 0.0f : x;  // NaN propagates, like relu()
            c[j] = x;
        }
    }
}

// table[mode][full][rows - 1]
using Table = std::array<std::array<std::array<TileFn, kMR>, 2>, 3>;

template <int Mode, int R>
void fill_mode(Table& t) {
    t[Mode][0][R - 1] = &tile<R, Mode, false>;
    t[Mode][1][R - 1] = &tile<R, Mode, true>;
}

template <int R>
void fill(Table& t) {
    if constexpr (R > 0) {
        fill_mode<kStrided, R>(t);
        fill_mode<kARows, R>(t);
        fill_mode<kBOffsets, R>(t);
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
    table()[op.b_offsets ? kBOffsets : op.a_rows ? kARows : kStrided][n == kNR ? 1 : 0][m - 1](K, op, C, ldc, n, ep);
}

}  // namespace

const KernelSet& scalar_kernels() {
    static const KernelSet k{"scalar", kMR, kNR, 256, 256, 2016, &kernel, &transpose_copy_sse};
    return k;
}

}  // namespace deepkern::cpu::gemm
