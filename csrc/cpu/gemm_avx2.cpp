// AVX2 + FMA GEMM micro-kernel: a 6 x 16 register tile (12 ymm accumulators, 2 ymm of B,
// 1 broadcast of A: 15 of the 16 ymm registers), 12 FMAs per 2 loads + 6 broadcasts.
// Edge tiles are instantiations with fewer rows (R < 6) and/or one vector of columns (V = 1);
// a partial last vector is read and written with vmaskmov (lanes past n are never touched).
// Compiled with -mavx2 -mfma (see CMakeLists.txt).
#include <immintrin.h>

#include <array>

#include "cpu/gemm_kernels.hpp"

namespace deepkern::cpu::gemm {
namespace {

constexpr int kMR = 6;
constexpr int kNR = 16;
constexpr int kVec = 8;  // floats per ymm

// Operand modes: A sliver strided by k (packed or transposed A) and B rows strided; A read by
// rows in place; B rows at per-k offsets.
constexpr int kStrided = 0, kARows = 1, kBOffsets = 2;

using TileFn = void (*)(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep);

// C (R, n) = epilogue(A (R, K) @ B (K, n)), n in ((V-1)*8, V*8]; Full: n == V*8
template <int R, int V, int Mode, bool Full>
void tile(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep) {
    __m256 acc[R][V];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();

    // Start fetching the C tile now: the epilogue reads/writes it after the K loop.
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc + kVec * V - 1), _MM_HINT_T0);
    }
    const int tail = n - kVec * (V - 1);  // 1..8 valid columns in the last vector
    const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const float* a = op.A;
    const float* b = op.B;
    const int64_t as = op.a_stride, bs = op.b_stride;
    const int64_t* boff = op.b_offsets;
    for (int k = 0; k < K; ++k) {
        if constexpr (Mode == kBOffsets) b = op.B + boff[k];
        __m256 bv[V];
#pragma GCC unroll 2
        for (int v = 0; v < V - 1; ++v) bv[v] = _mm256_loadu_ps(b + kVec * v);
        bv[V - 1] = Full ? _mm256_loadu_ps(b + kVec * (V - 1)) : _mm256_maskload_ps(b + kVec * (V - 1), last);
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
            const __m256 ar = _mm256_broadcast_ss(Mode == kARows ? a + r * as : a + r);
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
        }
        a += Mode == kARows ? 1 : as;
        if constexpr (Mode != kBOffsets) b += bs;
    }

    const __m256 zero = _mm256_setzero_ps();
    const __m256 beta = _mm256_set1_ps(ep.beta);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
        float* c = C + r * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < V; ++v) {
            const bool partial = !Full && v == V - 1;
            __m256 x = acc[r][v];
            if (ep.beta != 0.0f) {
                const __m256 old = partial ? _mm256_maskload_ps(c + kVec * v, last) : _mm256_loadu_ps(c + kVec * v);
                x = _mm256_fmadd_ps(beta, old, x);
            }
            if (ep.bias_col) {
                const float* bc = ep.bias_col + kVec * v;
                x = _mm256_add_ps(x, partial ? _mm256_maskload_ps(bc, last) : _mm256_loadu_ps(bc));
            }
            if (ep.bias_row) x = _mm256_add_ps(x, _mm256_set1_ps(ep.bias_row[r]));
            // max_ps returns its second operand when either is NaN: NaN propagates, like relu()
            if (ep.relu) x = _mm256_max_ps(zero, x);
            if (partial)
                _mm256_maskstore_ps(c + kVec * v, last, x);
            else
                _mm256_storeu_ps(c + kVec * v, x);
        }
    }
}

// table[mode][full][rows - 1][vectors - 1]
using Table = std::array<std::array<std::array<std::array<TileFn, 2>, kMR>, 2>, 3>;

template <int Mode, int R>
void fill_mode(Table& t) {
    t[Mode][0][R - 1] = {&tile<R, 1, Mode, false>, &tile<R, 2, Mode, false>};
    t[Mode][1][R - 1] = {&tile<R, 1, Mode, true>, &tile<R, 2, Mode, true>};
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
    const bool full = n % kVec == 0;
    table()[op.b_offsets ? kBOffsets : op.a_rows ? kARows : kStrided][full ? 1 : 0][m - 1][(n - 1) / kVec](K, op, C, ldc, n, ep);
}

}  // namespace

// The 6 x KC sliver of A (9 KiB at KC = 384) stays in L1; the KC x NC block of B in L2.
const KernelSet& avx2_kernels() {
    static const KernelSet k{"avx2", kMR, kNR, 384, 384, 2016, &kernel, &transpose_copy_sse};
    return k;
}

}  // namespace deepkern::cpu::gemm
