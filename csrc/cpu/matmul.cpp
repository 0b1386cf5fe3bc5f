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

// dbias[j] = the sum over rows i, in order, of G[i][j]. Threads take ranges of columns, so each
// column's sum runs over the rows in the same order on any thread count.
// G (M, N); dbias (N,)
static void column_sums(const float* __restrict G, float* __restrict dbias, int M, int N) {
    parallel_ranges(N, static_cast<int64_t>(M) * N, 16, [&](int64_t j0, int64_t j1) {
        std::fill(dbias + j0, dbias + j1, 0.0f);
        for (int64_t i = 0; i < M; ++i) {
            const float* __restrict row = G + i * N;
            for (int64_t j = j0; j < j1; ++j) dbias[j] += row[j];
        }
    });
}

// G (M, N); out (M, N) or null; dA like A, dB like B, dbias (N,) or null
void matmul_backward(const float* G, const float* A, const float* B, const float* out,
                     float* dA, float* dB, float* dbias,
                     int M, int N, int K, bool trans_a, bool trans_b) {
    std::unique_ptr<float[]> masked;  // uninitialised: relu_backward writes every element
    if (out != nullptr) {  // the forward fused a ReLU: gradient flows only where out > 0
        const int64_t total = static_cast<int64_t>(M) * N;
        masked.reset(new float[std::max<int64_t>(1, total)]);
        relu_backward(G, out, masked.get(), total);
        G = masked.get();
    }
    if (dbias != nullptr) column_sums(G, dbias, M, N);
    const int lda = trans_a ? M : K;
    const int ldb = trans_b ? K : N;
    // d op(A) = G op(B)^T (M, K);  d op(B) = op(A)^T G (K, N)
    if (dA == nullptr) {
        // not wanted
    } else if (!trans_a) {
        sgemm(false, !trans_b, M, K, N, G, N, B, ldb, 0.0f, dA, lda, nullptr, false);
    } else {  // dA (K, M) = op(B) G^T
        sgemm(trans_b, true, K, M, N, B, ldb, G, N, 0.0f, dA, lda, nullptr, false);
    }
    if (!trans_b)
        sgemm(!trans_a, false, K, N, M, A, lda, G, N, 0.0f, dB, ldb, nullptr, false);
    else  // dB (N, K) = G^T op(A)
        sgemm(true, trans_a, N, K, M, G, N, A, lda, 0.0f, dB, ldb, nullptr, false);
}

}  // namespace deepkern::cpu
