// Single-precision GEMM and the matmul op family.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace deepkern::cpu {

// C (M, N) = op(A) @ op(B) + beta * C, then + bias[n] if bias, then max(., 0) if relu.
// op(A) is (M, K): A is stored (M, K) with row stride lda, or (K, M) when trans_a.
// op(B) is (K, N): B is stored (K, N) with row stride ldb, or (N, K) when trans_b.
// beta is 0 (overwrite; C need not be initialised) or 1 (accumulate).
void sgemm(bool trans_a, bool trans_b, int M, int N, int K,
           const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc, const float* bias, bool relu);

// The full GEMM interface used inside the library (sgemm is a shorthand for it):
//   C (M, N) = op(A) @ op(B) + beta * C, + bias_col[n], + bias_row[m], then max(., 0) if relu.
// With b_row_offsets (K entries; trans_b must be false) row k of op(B) starts at
// B + b_row_offsets[k] instead of B + k * ldb, its N columns contiguous: convolutions pass
// shifted windows of an image as B this way. Inside an OpenMP parallel region it runs on the
// calling thread alone.
struct GemmArgs {
    bool trans_a = false, trans_b = false;
    int M = 0, N = 0, K = 0;
    const float* A = nullptr;
    int lda = 0;
    const float* B = nullptr;
    int ldb = 0;
    const int64_t* b_row_offsets = nullptr;
    float beta = 0.0f;
    float* C = nullptr;
    int ldc = 0;
    const float* bias_col = nullptr;  // (N,)
    const float* bias_row = nullptr;  // (M,)
    bool relu = false;
    // trans_a only: read A where it is, never packed. For callers whose A is small enough to sit
    // in L1/L2 already (each k's rows are contiguous in a transposed A, as in a packed sliver),
    // where packing would only copy it once more.
    bool a_in_place = false;
};
void sgemm(const GemmArgs& args);

// The op: dense row-major operands, C (M, N) overwritten.
void matmul_forward(const float* A, const float* B, const float* bias, float* C,
                    int M, int N, int K, bool trans_a, bool trans_b, bool relu);

// Gradients of matmul_forward. G is (M, N); out (M, N) is the forward result when the
// forward fused a ReLU (else nullptr). dA/dB have A's/B's stored shapes; dA null skips that
// product (a first layer's input needs no gradient); dbias (N,) may be null.
void matmul_backward(const float* G, const float* A, const float* B, const float* out,
                     float* dA, float* dB, float* dbias,
                     int M, int N, int K, bool trans_a, bool trans_b);

// Pieces of matmul_backward shared with the bf16 one (matmul_bf16.cpp)
namespace matmul_parts {
// G (M, N) where out > 0, else 0 (into masked; NaN in out blocks the gradient), or G itself when out is null
const float* relu_masked(const float* G, const float* out, int64_t M, int64_t N, std::unique_ptr<float[]>& masked);
// dbias (N,) = the sum of G's rows (M, N), added in row order, in fp32
void column_sums(const float* G, int64_t M, int64_t N, float* dbias);
}  // namespace matmul_parts

// Micro-kernel variant in use: "avx512", "avx2" or "scalar"; settable for tests/benchmarks.
std::string gemm_variant();
void set_gemm_variant(const std::string& name);  // "auto" picks the best the CPU supports

}  // namespace deepkern::cpu
