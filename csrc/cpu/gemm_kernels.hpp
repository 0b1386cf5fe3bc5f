// Interface between the GEMM drivers (gemm.cpp, gemm_threaded.cpp, gemm_pack.cpp: dispatch,
// threading, packing, cache blocking; see gemm_driver.hpp) and the register-blocked
// micro-kernels, one file per instruction set:
//   gemm_avx512.cpp (14x32 tile, zmm), gemm_avx2.cpp (6x16 tile, ymm), gemm_scalar.cpp (4x8 tile).
// Only the *_avx512/_avx2 files are compiled with those ISA flags; the driver calls into them
// only after __builtin_cpu_supports says the CPU has the instructions.
#pragma once
#include <cstdint>

namespace deepkern::cpu::gemm {

// What the micro-kernel does with its MR x NR accumulator tile when it stores it:
//   C = acc + beta * C  (beta 0: C is not read), then + bias_col[j], + bias_row[i], then max(., 0).
// The pointers are already offset to the tile's first column / row.
struct Epilogue {
    float beta;
    const float* bias_col;  // (n,) or null
    const float* bias_row;  // (m,) or null
    bool relu;
};

// Where the micro-kernel reads its operands. For k in [0, K), row r < m, column j < n:
//   A(r, k) = a_rows ? A[r * a_stride + k] : A[r + k * a_stride]
//   B(k, j) = b_offsets ? B[b_offsets[k] + j] : B[k * b_stride + j]
// A packed panel is (K, MR) with a_stride = MR; a transposed A read in place has a_stride = lda;
// a row-major A read in place (a_rows) has a_stride = lda. B is a packed (K, NR) panel
// (b_stride = NR, zero padded) or a row-major B read in place (b_stride = ldb); columns >= n are
// never read, so an in-place B needs no padding. b_offsets (one per k) lets B's rows sit anywhere:
// convolutions read shifted windows of the image itself that way, with no im2col copy.
// a_rows and b_offsets are never both set.
struct Operands {
    const float* A;
    int64_t a_stride;
    bool a_rows;
    const float* B;
    int64_t b_stride;
    const int64_t* b_offsets;
};

// C is (m, n) with row stride ldc, m <= MR, n <= NR: C = epilogue(A(:, 0:K) @ B(0:K, :)).
using MicroKernel = void (*)(int K, const Operands& op, float* C, int64_t ldc, int m, int n,
                             const Epilogue& ep);

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols: the transposing copy that packs
// a row-major A and a transposed B k-major (a copy: every variant gives the same bits).
using TransposeCopy = void (*)(const float* src, int64_t ld_src, int rows, int cols, float* dst, int64_t ld_dst);

// The baseline one, in 4 x 4 SSE blocks (gemm_pack.cpp): for the variants without AVX-512.
void transpose_copy_sse(const float* src, int64_t ld_src, int rows, int cols, float* dst, int64_t ld_dst);

// One instruction-set variant: its tile and cache-block sizes, its micro-kernel and the transpose
// its packing uses.
struct KernelSet {
    const char* name;  // "avx512", "avx2", "scalar"
    int MR, NR;        // register tile: rows of A, columns of B
    int KC, NC, MC;    // cache blocks: K depth, B block columns (L2), A block rows (L3)
    MicroKernel kernel;
    TransposeCopy transpose;
};

// Each is defined in its own translation unit; only call the AVX ones on a CPU that has them.
const KernelSet& avx512_kernels();
const KernelSet& avx2_kernels();
const KernelSet& scalar_kernels();

}  // namespace deepkern::cpu::gemm
