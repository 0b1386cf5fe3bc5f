// Internal to the fp32 GEMM: the problem, packing and blocking rules shared by its two drivers,
//   gemm.cpp           the serial driver (one thread; also every GEMM inside a parallel chunk)
//   gemm_threaded.cpp  the threaded driver (all threads on one problem, operands packed once)
// and gemm_pack.cpp, which packs operands into the micro-kernels' layout (gemm_kernels.hpp).
//
// Both drivers cut K into the same blocks (kc_step) and sum every element of C over them in
// the same order with the same micro-kernel, so a product comes out bit for bit the same
// whichever driver, thread count or split of C computed it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "cpu/gemm_kernels.hpp"

namespace deepkern::cpu::gemm {

// C (M, N) = op(A) @ op(B) + beta C (+ bias_col[j] + bias_row[i], ReLU); see matmul.hpp.
struct Problem {
    bool ta, tb;
    int M, N, K;
    const float* A;
    int64_t lda;
    const float* B;
    int64_t ldb;
    const int64_t* b_offsets;  // row k of op(B) at B + b_offsets[k] (untransposed B only)
    float beta;
    float* C;
    int64_t ldc;
    const float* bias_col;
    const float* bias_row;
    bool relu;
    bool a_in_place;  // ta only: never pack A (GemmArgs::a_in_place)
};

// A 64-byte aligned, grow-only buffer; thread_local instances make the drivers re-entrant.
class Scratch {
public:
    Scratch() = default;
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    ~Scratch() { std::free(data_); }

    float* get(size_t floats) {
        if (floats > size_) {
            std::free(data_);
            size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
            data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
            if (data_ == nullptr) {
                size_ = 0;
                throw std::bad_alloc();
            }
            size_ = floats;
        }
        return data_;
    }

private:
    float* data_ = nullptr;
    size_t size_ = 0;
};

// ceil(a / b) for a >= 0, b >= 1; in 64 bits, as a + b - 1 overflows an int for a near 2**31
inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// M * N * K multiply-adds; in double, as the product of three dimensions can overflow 64 bits
inline double macs_of(int64_t M, int64_t N, int64_t K) { return static_cast<double>(M) * N * K; }

// Depth of the K blocks: K cut into ceil(K / KC) equal blocks (the last may be shorter), rather
// than full blocks and a thin remainder that would re-read and re-write C for little work.
// Depends on K and the kernel set only: both drivers must cut K the same way.
inline int kc_step(const KernelSet& ks, int K) { return ceil_div(K, ceil_div(K, ks.KC)); }

// Width of the column blocks of a packed B: N cut into ceil(N / NC) nearly equal blocks of
// whole NR-column tiles (the last may be narrower).
inline int nc_step(const KernelSet& ks, int N) {
    return std::min(N, ceil_div(ceil_div(N, ceil_div(N, ks.NC)), ks.NR) * ks.NR);
}

// A block of mc rows is cut into ceil(mc / MR) slivers of nearly equal height (at most MR)
// rather than full slivers and a thin remainder: the kernels exist for every height, and a
// 2-row tile would run its FMAs at half speed (two loads per two FMAs).
struct Slivers {
    int count, base, extra;  // the first `extra` slivers have base + 1 rows, the rest base
    Slivers(int mc, int MR) : count((mc + MR - 1) / MR), base(mc / count), extra(mc % count) {}
    int start(int s) const { return s * base + std::min(s, extra); }
    int rows(int s) const { return base + (s < extra ? 1 : 0); }
};

// Which operands a driver reads in place instead of packing.
struct Layout {
    bool a_in_place, b_in_place;
};
Layout choose_layout(const KernelSet& ks, const Problem& p);

// Packs op(A)[i0:i0+mc, k0:k0+kc] as slivers (see Slivers), sliver s at dst + s*MR*kc, each
// (kc, MR) k-major. Rows past a sliver's height are left unset: the kernels never read them.
void pack_a(const KernelSet& ks, const Problem& p, int i0, int mc, int k0, int kc, float* dst);

// Packs op(B)[k0:k0+kc, j0:j0+nc] as slivers of NR columns, each (kc, NR) k-major, sliver js at
// dst + js*NR*kc; columns past nc in the last sliver are left unset (the kernels never read them).
void pack_b(const KernelSet& ks, const Problem& p, int k0, int kc, int j0, int nc, float* dst);

// Where the kernel reads A for rows [i, i+m) and the K block at k0 when A is read in place.
inline void a_in_place_operand(const Problem& p, int i, int64_t k0, Operands& op) {
    op.A = p.ta ? p.A + k0 * p.lda + i : p.A + i * p.lda + k0;
    op.a_stride = p.lda;
    op.a_rows = !p.ta;
}

// Where the kernel reads B for column j and the K block at k0 when B is read in place.
inline void b_in_place_operand(const Problem& p, int j, int64_t k0, Operands& op) {
    op.B = p.B + (p.b_offsets ? 0 : k0 * p.ldb) + j;
    op.b_stride = p.ldb;
    op.b_offsets = p.b_offsets ? p.b_offsets + k0 : nullptr;
}

// What the store of the K block [k0, k0+kc) does for rows starting at i: beta on the first
// block, bias and ReLU on the last (bias_col is set per column tile by the caller).
inline Epilogue block_epilogue(const Problem& p, int i, int64_t k0, int kc) {
    const bool first = k0 == 0, last = k0 + kc == p.K;
    Epilogue ep{};
    ep.beta = first ? p.beta : 1.0f;
    ep.bias_row = last && p.bias_row ? p.bias_row + i : nullptr;
    ep.relu = last && p.relu;
    return ep;
}

// The whole problem on the calling thread (gemm.cpp); all threads on it (gemm_threaded.cpp).
// Both need M, N, K >= 1.
void gemm_serial(const KernelSet& ks, const Problem& p);
void gemm_threaded(const KernelSet& ks, const Problem& p);

}  // namespace deepkern::cpu::gemm
