// bf16 GEMM: fp32 in and out, the inputs rounded to bfloat16 (round to nearest even) while they
// are packed, products summed in fp32 by AVX512-BF16 vdpbf16ps (two products per lane per
// instruction: twice the multiplies of an fp32 FMA). Only on CPUs with avx512_bf16.
#pragma once
#include <cstdint>

namespace deepkern::cpu {

// The CPU has avx512_bf16 (and the avx512f/bw/vl the kernel file is built with), and the bf16
// path is not switched off by set_bf16_enabled(false) (tests use that as a "no bf16" CPU).
bool bf16_available();
bool bf16_cpu_supports();
void set_bf16_enabled(bool on);
// Throws std::runtime_error saying why when bf16_available() is false.
void require_bf16();

// C (M, N) row-major, row stride ldc  =  bf16(A) (M, K) @ bf16(B) (K, N), fp32 accumulation.
// A(i, k) = A[i * a_rs + k * a_cs],  B(k, j) = B[k * b_rs + j * b_cs]  (any strides: transposes
// are read in place), then + bias[j] (bias (N,) or null) and max(., 0) when relu, in the last store.
// Throws std::runtime_error when bf16_available() is false.
void gemm_bf16(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
               int64_t b_rs, int64_t b_cs, float* C, int64_t ldc, const float* bias = nullptr, bool relu = false);

// gemm_bf16 without a bias, into caller-owned packing buffers ap (bf16::packed_a_pairs(M, K)
// pairs) and bp (bf16::packed_b_pairs(K, N)), for products repeated in a loop; accumulate: C += the
// product (K > 0). Threads as bf16::gemm_packed (serial inside a parallel chunk).
void gemm_bf16_buffered(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
                        int64_t b_rs, int64_t b_cs, float* C, int64_t ldc, bool accumulate, uint32_t* ap,
                        uint32_t* bp);

// The matmul op's gradients with bf16 products (matmul_bf16.cpp): arguments and results as
// matmul_backward (matmul.hpp): G (M, N), out (M, N) the forward's output when it fused a ReLU (else
// null), dA / dB shaped as A / B are stored, dbias (N,) or null (an fp32 sum of G's rows).
// Throws std::runtime_error when bf16_available() is false.
void matmul_backward_bf16(const float* G, const float* A, const float* B, const float* out, float* dA, float* dB,
                          float* dbias, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b);

namespace bf16 {
// Defined in gemm_bf16_avx512bf16.cpp (built with -mavx512bf16); call only when the CPU has it.
constexpr int MR = 14, NR = 32;   // register tile: 14 rows x 32 columns = 28 zmm accumulators
// One MR-row panel of A (rows <= MR): (Kp, MR) pairs, Kp = ceil(K/2), pair (p, r) =
// bf16(A(r, 2p)) | bf16(A(r, 2p+1)) << 16 (the odd k past K zero, and rows >= `rows`).
// tmp holds pack_scratch_pairs(K) pairs of scratch.
void pack_a(const float* A, int64_t a_rs, int64_t a_cs, int64_t rows, int64_t K, uint32_t* out, uint32_t* tmp);
// One NR-column panel of B: (Kp, NR) pairs, pair (p, j) = bf16(B(2p, j)) | bf16(B(2p+1, j)) << 16,
// columns >= cols and the odd k past K zero. tmp as for pack_a (used when b_rs == 1).
void pack_b(const float* B, int64_t b_rs, int64_t b_cs, int64_t K, int64_t cols, uint32_t* out, uint32_t* tmp);
// Scratch of pack_a / pack_b: a panel's rows converted before they are transposed
inline int64_t pack_scratch_pairs(int64_t K) { return NR * ((K + 1) / 2 + 16); }
// What the last k block's store adds: + bias[j] (per column, offset to the tile's first column) or
// + bias_row[r] (per row, offset to the tile's first row); either may be null; then max(., 0).
struct Finish {
    const float* bias;
    bool relu;
    const float* bias_row = nullptr;
};
// C (m, n) (m <= MR, n <= NR) = finish([C +] A panel pairs [0, kp) @ B panel pairs [0, kp)); finish may be null.
void tile(int64_t kp, const uint32_t* a, const uint32_t* b, float* C, int64_t ldc, int m, int n, bool accumulate,
          const Finish* finish);

// Whole packed operands (defined in gemm_bf16.cpp), for callers that pack an operand once and
// use it in many products (a convolution's weights) or pack in their own threads.
inline int64_t k_pairs(int64_t K) { return (K + 1) / 2; }
// A (M, K) packed: (ceil(M/MR), Kp, MR) pairs; B (K, N) packed: (ceil(N/NR), Kp, NR) pairs
inline int64_t packed_a_pairs(int64_t M, int64_t K) { return (M + MR - 1) / MR * k_pairs(K) * MR; }
inline int64_t packed_b_pairs(int64_t K, int64_t N) { return (N + NR - 1) / NR * k_pairs(K) * NR; }
// Strides as in gemm_bf16; the panels are shared out to the threads when the work is worth it.
void pack_a_all(int64_t M, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, uint32_t* out);
void pack_b_all(int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs, uint32_t* out);
// C (M, N), row stride ldc, = [C +] Ap @ Bp (K > 0), then + bias (per column, (N,)) or + bias_row
// (per row, (M,)), then max(., 0) when relu. Threads split the row panels; every C entry is summed
// by one tile in the same k-block order, so the bits do not depend on the thread count.
void gemm_packed(int64_t M, int64_t N, int64_t K, const uint32_t* Ap, const uint32_t* Bp, float* C, int64_t ldc,
                 bool accumulate, const float* bias = nullptr, const float* bias_row = nullptr, bool relu = false);
}  // namespace bf16

}  // namespace deepkern::cpu
