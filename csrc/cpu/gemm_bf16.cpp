// Driver of the bf16 GEMM (gemm_bf16.hpp): CPU check, packing, cache blocking, threads.
// The AVX512-BF16 code is in gemm_bf16_avx512bf16.cpp; this file is built for any x86-64.
#include "cpu/gemm_bf16.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <stdexcept>

#include "common/parallel.hpp"

namespace deepkern::cpu {
namespace {

std::atomic<bool> g_enabled{true};

// Pairs of k per cache block (1024 k): a B panel block is 512 * 32 * 4 B = 64 KiB and a block of
// kMCPanels A panels 12 * 512 * 14 * 4 B = 336 KiB, both in L2 (1 MiB on Zen 4); C is re-read once
// per block. Measured 1-thread CPU time on Zen 4 at 2048^3: 128 pairs 145, 256 161, 512 166 GFLOP/s.
constexpr int64_t kKCP = 512;
constexpr int64_t kMCPanels = 12;

std::unique_ptr<uint32_t[]> scratch(int64_t n) { return std::unique_ptr<uint32_t[]>(new uint32_t[n]); }

}  // namespace

bool bf16_cpu_supports() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("avx512bf16");
}

bool bf16_available() { return g_enabled.load() && bf16_cpu_supports(); }

void set_bf16_enabled(bool on) { g_enabled.store(on); }

void require_bf16() {
    if (!bf16_available())
        throw std::runtime_error(bf16_cpu_supports() ? "bf16 compute is switched off (set_bf16_enabled)"
                                                     : "bf16 compute needs a CPU with AVX512-BF16 (avx512_bf16)");
}

namespace bf16 {

void pack_a_all(int64_t M, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, uint32_t* out) {
    const int64_t Kp = k_pairs(K), m_panels = (M + MR - 1) / MR;
    parallel_ranges(m_panels, M * K, 1, [&](int64_t b, int64_t e) {
        auto tmp = scratch(pack_scratch_pairs(K));
        for (int64_t ip = b; ip < e; ++ip)
            pack_a(A + ip * MR * a_rs, a_rs, a_cs, std::min<int64_t>(MR, M - ip * MR), K, out + ip * Kp * MR,
                   tmp.get());
    });
}

void pack_b_all(int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs, uint32_t* out) {
    const int64_t Kp = k_pairs(K), n_panels = (N + NR - 1) / NR;
    parallel_ranges(n_panels, N * K, 1, [&](int64_t b, int64_t e) {
        auto tmp = scratch(pack_scratch_pairs(K));
        for (int64_t jp = b; jp < e; ++jp)
            pack_b(B + jp * NR * b_cs, b_rs, b_cs, K, std::min<int64_t>(NR, N - jp * NR), out + jp * Kp * NR,
                   tmp.get());
    });
}

void gemm_packed(int64_t M, int64_t N, int64_t K, const uint32_t* Ap, const uint32_t* Bp, float* C, int64_t ldc,
                 bool accumulate, const float* bias, const float* bias_row, bool relu) {
    const int64_t Kp = k_pairs(K), m_panels = (M + MR - 1) / MR, n_panels = (N + NR - 1) / NR;
    const bool plain = !bias && !bias_row && !relu;
    // Threads split the row panels; each walks k blocks, then row blocks, then B panels.
    parallel_ranges(m_panels, M * N * K, 1, [&](int64_t b, int64_t e) {
        for (int64_t pc = 0; pc < Kp; pc += kKCP) {
            const int64_t kc = std::min(kKCP, Kp - pc);
            const bool last = pc + kc == Kp;
            for (int64_t ib = b; ib < e; ib += kMCPanels) {
                const int64_t ie = std::min(e, ib + kMCPanels);
                for (int64_t jp = 0; jp < n_panels; ++jp) {
                    const uint32_t* bpan = Bp + (jp * Kp + pc) * NR;
                    const int n = (int)std::min<int64_t>(NR, N - jp * NR);
                    for (int64_t ip = ib; ip < ie; ++ip) {
                        const int64_t i0 = ip * MR;
                        const Finish fin{bias ? bias + jp * NR : nullptr, relu, bias_row ? bias_row + i0 : nullptr};
                        tile(kc, Ap + (ip * Kp + pc) * MR, bpan, C + i0 * ldc + jp * NR, ldc,
                             (int)std::min<int64_t>(MR, M - i0), n, accumulate || pc > 0,
                             last && !plain ? &fin : nullptr);
                    }
                }
            }
        }
    });
}

}  // namespace bf16

void gemm_bf16(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
               int64_t b_rs, int64_t b_cs, float* C, int64_t ldc, const float* bias, bool relu) {
    require_bf16();
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = std::max(bias ? bias[j] : 0.0f, relu ? 0.0f : -INFINITY);
        return;
    }
    auto Ap = scratch(bf16::packed_a_pairs(M, K));  // (m_panels, Kp, MR) pairs: a tile reads one contiguous run
    auto Bp = scratch(bf16::packed_b_pairs(K, N));  // (n_panels, Kp, NR) pairs
    bf16::pack_a_all(M, K, A, a_rs, a_cs, Ap.get());
    bf16::pack_b_all(K, N, B, b_rs, b_cs, Bp.get());
    bf16::gemm_packed(M, N, K, Ap.get(), Bp.get(), C, ldc, false, bias, nullptr, relu);
}

void gemm_bf16_buffered(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
                        int64_t b_rs, int64_t b_cs, float* C, int64_t ldc, bool accumulate, uint32_t* ap,
                        uint32_t* bp) {
    require_bf16();
    bf16::pack_a_all(M, K, A, a_rs, a_cs, ap);
    bf16::pack_b_all(K, N, B, b_rs, b_cs, bp);
    bf16::gemm_packed(M, N, K, ap, bp, C, ldc, accumulate);
}

}  // namespace deepkern::cpu
