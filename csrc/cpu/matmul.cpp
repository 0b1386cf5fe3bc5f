// matmul op family on top of sgemm. The GEMM itself lives in gemm.cpp.
#include "cpu/matmul.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>

#include "common/parallel.hpp"

namespace deepkern::cpu {

// A is (M, K) [or (K, M)], B is (K, N) [or (N, K)], bias (N,), C (M, N)
void matmul_forward(const float* A, const float* B, const float* bias, float* C,
                    int M, int N, int K, bool trans_a, bool trans_b, bool relu) {
    int lda = trans_a ? M : K;
    int ldb = trans_b ? K : N;
    sgemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, 0.0f, C, N, bias, relu);
}

// The gradient that reaches the product and the bias: G where the fused ReLU's output is
// positive (out non-null), and dbias[j] = sum over rows i in order of that gradient (dbias
// non-null), in one pass over G. Threads take ranges of columns, so each column's sum runs
// over the rows in the same order on any thread count.
// G, out (M, N); masked (M, N) written when out is non-null; dbias (N,)
static void mask_and_bias(const float* G, const float* out, float* masked, float* dbias, int M, int N) {
    const int64_t total = static_cast<int64_t>(M) * N;
    if (dbias == nullptr) {  // the mask alone: any split
        parallel_ranges(total, total, 16, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) masked[i] = out[i] > 0.0f ? G[i] : 0.0f;
        });
        return;
    }
    parallel_ranges(N, total, 16, [&](int64_t j0, int64_t j1) {
        std::fill(dbias + j0, dbias + j1, 0.0f);
        for (int64_t i = 0; i < M; ++i) {
            const float* g = G + i * N;
            if (out) {
                const float* o = out + i * N;
                float* m = masked + i * N;
                for (int64_t j = j0; j < j1; ++j) m[j] = o[j] > 0.0f ? g[j] : 0.0f;
                g = m;
            }
            for (int64_t j = j0; j < j1; ++j) dbias[j] += g[j];
        }
    });
}

// G (M, N); out (M, N) or null; dA like A, dB like B, dbias (N,) or null
void matmul_backward(const float* G, const float* A, const float* B, const float* out,
                     float* dA, float* dB, float* dbias,
                     int M, int N, int K, bool trans_a, bool trans_b) {
    std::unique_ptr<float[]> masked;  // uninitialised: mask_and_bias writes every element
    if (out != nullptr) masked.reset(new float[std::max<int64_t>(1, static_cast<int64_t>(M) * N)]);
    if (out != nullptr || dbias != nullptr) mask_and_bias(G, out, masked.get(), dbias, M, N);
    if (out != nullptr) G = masked.get();
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
