// sgemm: a straightforward, correct, OpenMP-parallel reference GEMM (tuned variants come later).
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/parallel.hpp"
#include "cpu/matmul.hpp"

namespace deepkern::cpu {

// C (M, N) = op(A) op(B) + beta C (+ bias, relu); see matmul.hpp.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K,
           const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc, const float* bias, bool relu) {
    // Bring op(B) to (K, N) row-major once so the inner loop runs over contiguous columns.
    std::vector<float> bt;
    const float* Bk = B;
    int ldbk = ldb;
    if (trans_b) {
        bt.resize(static_cast<size_t>(K) * N);
        for (int j = 0; j < N; ++j)
            for (int p = 0; p < K; ++p) bt[static_cast<size_t>(p) * N + j] = B[static_cast<int64_t>(j) * ldb + p];
        Bk = bt.data();
        ldbk = N;
    }
#pragma omp parallel for schedule(static) if (worth_parallel(static_cast<int64_t>(M) * N * K))
    for (int i = 0; i < M; ++i) {
        float* c = C + static_cast<int64_t>(i) * ldc;
        if (beta == 0.0f) std::fill(c, c + N, 0.0f);
        for (int p = 0; p < K; ++p) {
            const float a = trans_a ? A[static_cast<int64_t>(p) * lda + i] : A[static_cast<int64_t>(i) * lda + p];
            const float* b = Bk + static_cast<int64_t>(p) * ldbk;
            for (int j = 0; j < N; ++j) c[j] += a * b[j];
        }
        if (bias)
            for (int j = 0; j < N; ++j) c[j] += bias[j];
        if (relu)
            for (int j = 0; j < N; ++j) c[j] = std::max(c[j], 0.0f);
    }
}

std::string gemm_variant() { return "scalar"; }

void set_gemm_variant(const std::string& name) {
    if (name != "scalar" && name != "auto")
        throw std::invalid_argument("set_gemm_variant: unknown or unsupported variant '" + name + "'");
}

}  // namespace deepkern::cpu
