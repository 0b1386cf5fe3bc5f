// matmul op family on top of sgemm. The GEMM itself lives in gemm.cpp.
#include "cpu/matmul.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>

#include "common/parallel.hpp"
#include "cpu/activation.hpp"

namespace deepkern::cpu {

// A is (M, K) [or (K, M)], B is (K, N) [or (N, K)], bias (N,), C (M, N)
void matmul_forward(const float* A, const float* B, const float* bias, float* C,
                    int M, int N, int K, bool trans_a, bool trans_b, bool relu) {
    int lda = trans_a ? M : K;
    int ldb = trans_b ? K : N;
    sgemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, 0.0f, C, N, bias, relu);
}

// G (M, N); out (M, N) or null; dA like A (or null: not computed), dB like B, dbias (N,) or null
void matmul_backward(const float* G, const float* A, const float* B, const float* out,
                     float* dA, float* dB, float* dbias,
                     int M, int N, int K, bool trans_a, bool trans_b) {
    std::unique_ptr<float[]> masked;
    G = matmul_parts::relu_masked(G, out, M, N, masked);
    const int lda = trans_a ? M : K;
    const int ldb = trans_b ? K : N;
    // d op(A) = G op(B)^T (M, K);  d op(B) = op(A)^T G (K, N)
    if (dA == nullptr) {
        // not wanted (a first layer's input)
    } else if (!trans_a) {
        sgemm(false, !trans_b, M, K, N, G, N, B, ldb, 0.0f, dA, lda, nullptr, false);
    } else {  // dA (K, M) = op(B) G^T
        sgemm(trans_b, true, K, M, N, B, ldb, G, N, 0.0f, dA, lda, nullptr, false);
    }
    if (!trans_b)
        sgemm(!trans_a, false, K, N, M, A, lda, G, N, 0.0f, dB, ldb, nullptr, false);
    else  // dB (N, K) = G^T op(A)
        sgemm(true, trans_a, N, K, M, G, N, A, lda, 0.0f, dB, ldb, nullptr, false);
    if (dbias != nullptr) matmul_parts::column_sums(G, M, N, dbias);
}

namespace matmul_parts {

const float* relu_masked(const float* G, const float* out, int64_t M, int64_t N, std::unique_ptr<float[]>& masked) {
    if (out == nullptr) return G;
    masked.reset(new float[static_cast<size_t>(std::max<int64_t>(M * N, 1))]);  // written whole below
    relu_backward(G, out, masked.get(), M * N);  // the AVX-512/AVX2 kernel: G where out > 0, else 0 (NaN too)
    return masked.get();
}

// Threads take ranges of columns, so each column's sum runs over the rows in the same order on
// any thread count; restrict lets the compiler vectorise the row adds.
void column_sums(const float* G, int64_t M, int64_t N, float* dbias) {
    parallel_ranges(N, M * N, 16, [&](int64_t j0, int64_t j1) {
        float* __restrict sums = dbias;
        std::fill(sums + j0, sums + j1, 0.0f);
        for (int64_t i = 0; i < M; ++i) {
            const float* __restrict row = G + i * N;
            for (int64_t j = j0; j < j1; ++j) sums[j] += row[j];
        }
    });
}

}  // namespace matmul_parts

}  // namespace deepkern::cpu
