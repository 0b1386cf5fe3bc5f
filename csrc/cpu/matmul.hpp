// Single-precision GEMM and the matmul op family.
#pragma once
#include <cstdint>
#include <string>

namespace deepkern::cpu {

// C (M, N) = op(A) @ op(B) + beta * C, then + bias[n] if bias, then max(., 0) if relu.
// op(A) is (M, K): A is stored (M, K) with row stride lda, or (K, M) when trans_a.
// op(B) is (K, N): B is stored (K, N) with row stride ldb, or (N, K) when trans_b.
// beta is 0 (overwrite; C need not be initialised) or 1 (accumulate).
void sgemm(bool trans_a, bool trans_b, int M, int N, int K,
           const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc, const float* bias, bool relu);

// sgemm with a per-row bias as well: + bias_row[m] (M,) after + bias_col[n] (N,); either may be
// null. Runs on the calling thread alone when called inside an OpenMP parallel region.
void sgemm_ex(bool trans_a, bool trans_b, int M, int N, int K, const float* A, int lda, const float* B,
              int ldb, float beta, float* C, int ldc, const float* bias_col, const float* bias_row,
              bool relu);

// The op: dense row-major operands, C (M, N) overwritten.
void matmul_forward(const float* A, const float* B, const float* bias, float* C,
                    int M, int N, int K, bool trans_a, bool trans_b, bool relu);

// Gradients of matmul_forward. G is (M, N); out (M, N) is the forward result when the
// forward fused a ReLU (else nullptr). dA/dB have A's/B's stored shapes; dbias (N,) may be null.
void matmul_backward(const float* G, const float* A, const float* B, const float* out,
                     float* dA, float* dB, float* dbias,
                     int M, int N, int K, bool trans_a, bool trans_b);

// Micro-kernel variant in use: "avx512", "avx2" or "scalar"; settable for tests/benchmarks.
std::string gemm_variant();
void set_gemm_variant(const std::string& name);  // "auto" picks the best the CPU supports

}  // namespace deepkern::cpu
