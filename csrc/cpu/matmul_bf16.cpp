// The matmul op's backward with bf16 products (gemm_bf16.hpp): one call for d op(A), d op(B) and the
// bias gradient, as matmul_backward (matmul.cpp) in fp32.
//
// G (M, N) (masked where a fused ReLU's output was not > 0), op(A) (M, K), op(B) (K, N):
//   d op(A) (M, K) = G @ op(B)^T     reduction N    (stored transposed when trans_a: op(B) @ G^T)
//   d op(B) (K, N) = op(A)^T @ G     reduction M    (stored transposed when trans_b: G^T @ op(A))
//   dbias (N,)     = G's rows summed in row order, fp32, no product (matmul_parts::column_sums)
// Each product rounds its operands to bf16 (nearest even) while packing them with the pairs of k
// along its reduction, and sums in fp32 (bf16::gemm_packed). A and B are packed once; G twice, once
// per reduction (its pairs run along N for d op(A) and along M for d op(B)). The packing buffers are
// allocated once for both products. The bits are those of the two gemm_bf16 calls the product
// formulas name (the same packing and the same tile sums), independent of the thread count.
#include <algorithm>
#include <memory>

#include "cpu/gemm_bf16.hpp"
#include "cpu/matmul.hpp"

namespace deepkern::cpu {
namespace {

// A stored row-major matrix with `cols` columns, read as itself or transposed: element (r, c) at
// r * rs + c * cs
struct View {
    const float* p;
    int64_t rs, cs;
};
View view(const float* p, int64_t cols, bool transposed) { return transposed ? View{p, 1, cols} : View{p, cols, 1}; }

// One product's shape: C (m, n) = X (m, k) @ Y (k, n), C dense with n columns
struct Product {
    int64_t m, n, k;
    View x, y;
    float* c;
};

}  // namespace

void matmul_backward_bf16(const float* G, const float* A, const float* B, const float* out, float* dA, float* dB,
                          float* dbias, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b) {
    require_bf16();
    std::unique_ptr<float[]> masked;
    G = matmul_parts::relu_masked(G, out, M, N, masked);
    const int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
    const Product products[2] = {
        trans_a ? Product{K, M, N, view(B, b_cols, trans_b), view(G, N, true), dA}      // dA (K, M) = op(B) G^T
                : Product{M, K, N, view(G, N, false), view(B, b_cols, !trans_b), dA},   // dA (M, K) = G op(B)^T
        trans_b ? Product{N, K, M, view(G, N, true), view(A, a_cols, trans_a), dB}      // dB (N, K) = G^T op(A)
                : Product{K, N, M, view(A, a_cols, !trans_a), view(G, N, false), dB},   // dB (K, N) = op(A)^T G
    };
    int64_t ap = 1, bp = 1;
    for (const Product& q : products) {
        ap = std::max(ap, bf16::packed_a_pairs(q.m, q.k));
        bp = std::max(bp, bf16::packed_b_pairs(q.k, q.n));
    }
    std::unique_ptr<uint32_t[]> a_pack(new uint32_t[ap]), b_pack(new uint32_t[bp]);
    for (const Product& q : products) {
        if (q.c == nullptr || q.m == 0 || q.n == 0) continue;  // dA null: not wanted
        if (q.k == 0) {  // no terms: a zero gradient
            std::fill(q.c, q.c + q.m * q.n, 0.0f);
            continue;
        }
        gemm_bf16_buffered(q.m, q.n, q.k, q.x.p, q.x.rs, q.x.cs, q.y.p, q.y.rs, q.y.cs, q.c, q.n, false,
                           a_pack.get(), b_pack.get());
    }
    if (dbias != nullptr) matmul_parts::column_sums(G, M, N, dbias);
}

}  // namespace deepkern::cpu
