// AVX-512 GEMM micro-kernel: a 14 x 32 register tile (28 zmm accumulators, 2 zmm of B,
// 1 broadcast of A: 31 of the 32 zmm registers). Per k step it issues 28 FMAs against
// 2 vector loads + 14 broadcasts, so on cores with one or two FMA pipes the FMAs, not the
// loads, bound it. Edge tiles are instantiations with fewer rows (R < 14) and/or one
// vector of columns (V = 1); partial column vectors use AVX-512 masks for loads and stores.
// Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma (see CMakeLists.txt).
#include <immintrin.h>

#include <algorithm>
#include <array>

#include "cpu/gemm_kernels.hpp"
#include "cpu/transpose16_avx512.hpp"

namespace deepkern::cpu::gemm {
namespace {

constexpr int kMR = 14;
constexpr int kNR = 32;
constexpr int kVec = 16;  // floats per zmm

// Operand modes: A sliver strided by k (packed or transposed A) and B rows strided; A read by
// rows in place; B rows at per-k offsets.
constexpr int kStrided = 0, kARows = 1, kBOffsets = 2;

using TileFn = void (*)(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep);

// C (R, n) = epilogue(A (R, K) @ B (K, n)), n in ((V-1)*16, V*16]
template <int R, int V, int Mode>
void tile(int K, const Operands& op, float* C, int64_t ldc, int n, const Epilogue& ep) {
    __m512 acc[R][V];
#pragma GCC unroll 14
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();

    // Start fetching the C tile now: the epilogue reads/writes it after the K loop, and its rows
    // are ldc apart (often missing every cache level for a wide C).
#pragma GCC unroll 14
    for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc + kVec * V - 1), _MM_HINT_T0);
    }
    const int tail = n - kVec * (V - 1);  // 1..16 valid columns in the last vector
    const __mmask16 last = tail >= kVec ? static_cast<__mmask16>(0xFFFF)
                                        : static_cast<__mmask16>((1u << tail) - 1u);
    const float* a = op.A;
    const float* b = op.B;
    const int64_t as = op.a_stride, bs = op.b_stride;
    const int64_t* boff = op.b_offsets;
    for (int k = 0; k < K; ++k) {
        if constexpr (Mode == kBOffsets) b = op.B + boff[k];
        __m512 bv[V];
#pragma GCC unroll 2
        for (int v = 0; v < V - 1; ++v) bv[v] = _mm512_loadu_ps(b + kVec * v);
        bv[V - 1] = _mm512_maskz_loadu_ps(last, b + kVec * (V - 1));
        // B slivers stream from L2: ask for the rows 8 steps ahead (one line per 16 floats)
        if constexpr (Mode == kStrided) {
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) _mm_prefetch(reinterpret_cast<const char*>(b + 8 * bs + kVec * v), _MM_HINT_T0);
        }
#pragma GCC unroll 14
        for (int r = 0; r < R; ++r) {
            const __m512 ar = _mm512_set1_ps(Mode == kARows ? a[r * as] : a[r]);
#pragma GCC unroll 2
            for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
        }
        a += Mode == kARows ? 1 : as;
        if constexpr (Mode != kBOffsets) b += bs;
    }

    const __m512 zero = _mm512_setzero_ps();
    const __m512 beta = _mm512_set1_ps(ep.beta);
#pragma GCC unroll 14
    for (int r = 0; r < R; ++r) {
        float* c = C + r * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < V; ++v) {
            const __mmask16 m = v == V - 1 ? last : static_cast<__mmask16>(0xFFFF);
            __m512 x = acc[r][v];
            if (ep.beta != 0.0f) x = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m, c + kVec * v), x);
            if (ep.bias_col) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, ep.bias_col + kVec * v));
            if (ep.bias_row) x = _mm512_add_ps(x, _mm512_set1_ps(ep.bias_row[r]));
            // ReLU as a zero-masking move (GCC 12 warns spuriously on _mm512_max_ps): lanes that
            // are not less than 0 stay, NaN included (unordered compares true), like relu()
            if (ep.relu) x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, zero, _CMP_NLT_UQ), x);
            _mm512_mask_storeu_ps(c + kVec * v, m, x);
        }
    }
}

// table[mode][rows - 1][vectors - 1]
using Table = std::array<std::array<std::array<TileFn, 2>, kMR>, 3>;

template <int R>
void fill(Table& t) {
    if constexpr (R > 0) {
        t[kStrided][R - 1] = {&tile<R, 1, kStrided>, &tile<R, 2, kStrided>};
        t[kARows][R - 1] = {&tile<R, 1, kARows>, &tile<R, 2, kARows>};
        t[kBOffsets][R - 1] = {&tile<R, 1, kBOffsets>, &tile<R, 2, kBOffsets>};
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
    table()[op.b_offsets ? kBOffsets : op.a_rows ? kARows : kStrided][m - 1][(n - 1) / kVec](K, op, C, ldc, n, ep);
}

// The packing transpose in 16 x 16 register blocks, ~2.3x the SSE 4 x 4 one (the forward of a
// linear layer packs both its operands this way); edges by masks.
void transpose_copy_avx512(const float* src, int64_t ld_src, int rows, int cols, float* dst, int64_t ld_dst) {
    for (int r = 0; r < rows; r += 16)
        for (int c = 0; c < cols; c += 16)
            simd::transpose16(src + r * ld_src + c, ld_src, std::min(16, cols - c), std::min(16, rows - r),
                              dst + c * ld_dst + r, static_cast<int>(ld_dst));
}

}  // namespace

// KC x NC block of B (384 x 384 floats, 576 KiB) stays in a 1 MiB L2; the 14 x KC sliver of A
// (21 KiB) stays in L1 while the B slivers stream past it; MC rows of A (3 MiB) live in L3.
const KernelSet& avx512_kernels() {
    static const KernelSet k{"avx512", kMR, kNR, 384, 384, 2016, &kernel, &transpose_copy_avx512};
    return k;
}

}  // namespace deepkern::cpu::gemm
