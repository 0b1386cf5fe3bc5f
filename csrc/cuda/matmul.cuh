// The matmul op family on the GPU: float32 GEMM (SIMT, register-blocked) and a TF32
// tensor-core variant, with bias and ReLU fused in the epilogue.
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace deepkern::cuda {

// C (M, N) = relu?(op(A) @ op(B) + bias). op(A) is (M, K): A is stored (M, K), or (K, M) when
// trans_a. op(B) is (K, N): B is stored (K, N), or (N, K) when trans_b. bias (N,) may be null.
void matmul_forward(const float* A, const float* B, const float* bias, float* C, int M, int N, int K,
                    bool trans_a, bool trans_b, bool relu, cudaStream_t stream);

// Gradients of matmul_forward. G is (M, N). When the forward fused a ReLU, out (M, N) is its
// result and gmask (M, N) is scratch for the masked gradient; else both are null.
// dA/dB have A's/B's stored shapes; dbias (N,) may be null. All outputs are overwritten.
void matmul_backward(const float* G, const float* A, const float* B, const float* out, float* gmask,
                     float* dA, float* dB, float* dbias, int M, int N, int K, bool trans_a, bool trans_b,
                     cudaStream_t stream);

// "fp32" (SIMT, exact float32 products) or "tf32" (tensor cores, sm_80+; 10-bit mantissa inputs).
// Starts from the environment variable DEEPKERN_CUDA_MATMUL, default "fp32".
std::string matmul_variant();
void set_matmul_variant(const std::string& name);

// column sums: out (N,) = sum over rows of X (M, N); used for bias gradients.
void column_sum(const float* X, float* out, int M, int N, cudaStream_t stream);

}  // namespace deepkern::cuda
