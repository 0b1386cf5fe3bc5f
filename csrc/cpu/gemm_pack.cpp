// Packing of the fp32 GEMM's operands into the micro-kernels' k-major slivers, and the rule for
// when an operand is read in place instead (gemm_driver.hpp). Built for any x86-64 (SSE only).
#include <xmmintrin.h>

#include "cpu/gemm_driver.hpp"

namespace deepkern::cpu::gemm {
namespace {

// d[0:n] = the first n (1 to 3) lanes of x
inline void store_lanes(float* d, __m128 x, int n) {
    if (n >= 2)
        _mm_storel_pi(reinterpret_cast<__m64*>(d), x);
    else
        _mm_store_ss(d, x);
    if (n == 3) _mm_store_ss(d + 2, _mm_movehl_ps(x, x));
}

}  // namespace

// 4 x 4 SSE blocks (baseline x86-64)
void transpose_copy_sse(const float* src, int64_t ld_src, int rows, int cols, float* dst, int64_t ld_dst) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float* s0 = src + r * ld_src;
        const float* s1 = s0 + ld_src;
        const float* s2 = s1 + ld_src;
        const float* s3 = s2 + ld_src;
        int c = 0;
        for (; c + 4 <= cols; c += 4) {
            __m128 x0 = _mm_loadu_ps(s0 + c), x1 = _mm_loadu_ps(s1 + c);
            __m128 x2 = _mm_loadu_ps(s2 + c), x3 = _mm_loadu_ps(s3 + c);
            _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
            float* d = dst + c * ld_dst + r;
            _mm_storeu_ps(d, x0);
            _mm_storeu_ps(d + ld_dst, x1);
            _mm_storeu_ps(d + 2 * ld_dst, x2);
            _mm_storeu_ps(d + 3 * ld_dst, x3);
        }
        for (; c < cols; ++c) {
            float* d = dst + c * ld_dst + r;
            d[0] = s0[c];
            d[1] = s1[c];
            d[2] = s2[c];
            d[3] = s3[c];
        }
    }
    const int rem = rows - r;  // 1 to 3 rows left (an A sliver of 14 rows leaves 2)
    if (rem == 0) return;
    // the same 4 x 4 blocks with the last row repeated, of which `rem` lanes are stored
    const float* s0 = src + r * ld_src;
    const float* s1 = rem > 1 ? s0 + ld_src : s0;
    const float* s2 = rem > 2 ? s1 + ld_src : s1;
    int c = 0;
    for (; c + 4 <= cols; c += 4) {
        __m128 x0 = _mm_loadu_ps(s0 + c), x1 = _mm_loadu_ps(s1 + c), x2 = _mm_loadu_ps(s2 + c), x3 = x2;
        _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
        float* d = dst + c * ld_dst + r;
        store_lanes(d, x0, rem);
        store_lanes(d + ld_dst, x1, rem);
        store_lanes(d + 2 * ld_dst, x2, rem);
        store_lanes(d + 3 * ld_dst, x3, rem);
    }
    for (; c < cols; ++c) {
        float* d = dst + c * ld_dst + r;
        for (int i = 0; i < rem; ++i) d[i] = s0[i * ld_src + c];
    }
}

namespace {

// Below this many multiply-adds the operands are read in place where the layout allows it
// (packing would cost about as much as the product).
constexpr int64_t kSmallMacs = 48 * 48 * 48;
// A row-major B up to this size (half of a 1 MiB L2) is read in place.
constexpr int64_t kInPlaceBBytes = 512 * 1024;

}  // namespace

void pack_a(const KernelSet& ks, const Problem& p, int i0, int mc, int k0, int kc, float* dst) {
    const int MR = ks.MR;
    const Slivers sl(mc, MR);
    for (int s = 0; s < sl.count; ++s) {
        const int ir = sl.start(s), rows = sl.rows(s);
        float* d = dst + static_cast<int64_t>(s) * MR * kc;
        if (!p.ta) {  // A is (M, K): rows of A become columns of the sliver
            ks.transpose(p.A + (i0 + ir) * p.lda + k0, p.lda, rows, kc, d, MR);
        } else {      // A is (K, M): each k already holds the sliver's rows contiguously
            const float* a = p.A + static_cast<int64_t>(k0) * p.lda + i0 + ir;
            for (int k = 0; k < kc; ++k)  // rows <= MR floats: an inline loop, not a memcpy call
                for (int r = 0; r < rows; ++r) d[k * MR + r] = a[k * p.lda + r];
        }
    }
}

void pack_b(const KernelSet& ks, const Problem& p, int k0, int kc, int j0, int nc, float* dst) {
    const int NR = ks.NR;
    for (int jr = 0; jr < nc; jr += NR) {
        const int cols = std::min(NR, nc - jr);
        float* d = dst + static_cast<int64_t>(jr) * kc;
        if (!p.tb) {  // B is (K, N): copy row segments
            const float* s = p.B + static_cast<int64_t>(k0) * p.ldb + j0 + jr;
            for (int k = 0; k < kc; ++k)  // cols <= NR floats: an inline loop, not a memcpy call
                for (int c = 0; c < cols; ++c) d[k * NR + c] = s[k * p.ldb + c];
        } else {      // B is (N, K): rows of B become columns of the sliver
            ks.transpose(p.B + (j0 + jr) * p.ldb + k0, p.ldb, cols, kc, d, NR);
        }
    }
}

Layout choose_layout(const KernelSet& ks, const Problem& p) {
    const bool small = macs_of(p.M, p.N, p.K) <= kSmallMacs;
    Layout l{};
    // A transposed A is read in place when small (each k holds the sliver's rows contiguously).
    // A row-major A is read by rows when K is tiny (its MR x K sliver is a few cache lines) or
    // C has at most two column tiles: each A sliver is then used once or twice, and packing
    // (a transpose) would cost more than the product saves. The kernel cannot read A by rows
    // while following B row offsets.
    if (p.ta)
        l.a_in_place = small || p.a_in_place;
    else
        l.a_in_place = p.b_offsets == nullptr && (p.K <= 16 || p.N <= 2 * ks.NR);
    // A row-major B is read in place when small, when K is tiny, or when all of it sits in L2
    // anyway (its slivers then stream from L2 just as packed ones would). B rows given by
    // offsets are always read in place: the kernel follows the offsets.
    l.b_in_place = p.b_offsets != nullptr ||
                   (!p.tb && (small || p.K <= 16 ||
                              static_cast<double>(p.K) * p.ldb * sizeof(float) <= kInPlaceBBytes));
    return l;
}

}  // namespace deepkern::cpu::gemm
