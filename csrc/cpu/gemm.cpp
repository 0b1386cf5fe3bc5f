// sgemm: run-time choice of micro-kernel, and the serial driver (the threaded one is in
// gemm_threaded.cpp, packing in gemm_pack.cpp; gemm_driver.hpp holds what they share).
//
// The loops (after GotoBLAS/BLIS, arranged for a row-major C and a wide-in-N register tile):
//   ic: MC rows of op(A)       -- A block packed (MC x KC), lives in L3
//    pc: KC deep slice of K     -- beta applies to the first slice, bias/ReLU to the last
//     jc: NC columns of op(B)   -- B block packed (KC x NC), lives in L2
//      ir: MR rows              -- one A sliver (MR x KC) stays in L1 ...
//       jr: NR columns          -- ... while the B slivers stream past it: micro-kernel call
// Packed slivers are k-major ((KC, MR) for A, (KC, NR) for B) so the micro-kernel reads both
// sequentially. Packing is skipped where it would cost more than it saves (choose_layout): small
// problems, a tiny K, a narrow C (A read by rows), a B that fits in L2, B rows at given offsets.
//
// Threads: from about 1M multiply-adds all threads work on the problem (gemm_threaded, sharing
// the packed operands); inside a parallel chunk (conv2d over images) sgemm runs on the calling
// thread only. Both drivers sum every element of C over the same K blocks in the same order, so
// the result does not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "common/parallel.hpp"
#include "cpu/gemm_driver.hpp"
#include "cpu/matmul.hpp"

namespace deepkern::cpu::gemm {
namespace {

// The serial driver's packing buffers (one set per thread: the driver is re-entrant).
thread_local Scratch tl_pack_a;
thread_local Scratch tl_pack_b;

}  // namespace

// The whole problem on the calling thread.
void gemm_serial(const KernelSet& ks, const Problem& p) {
    const int MR = ks.MR, NR = ks.NR;
    const int MC = ks.MC;
    const int KC = kc_step(ks, p.K);
    const int NC = nc_step(ks, p.N);
    const Layout lay = choose_layout(ks, p);
    const bool a_in_place = lay.a_in_place, b_in_place = lay.b_in_place;

    float* pa = a_in_place ? nullptr : tl_pack_a.get(static_cast<size_t>(std::min(MC, p.M) + 2 * MR) * KC);
    float* pb = b_in_place ? nullptr : tl_pack_b.get(static_cast<size_t>(std::min(NC, p.N) + NR) * KC);

    // Equal A blocks (in whole slivers) rather than full ones and a sliver of a remainder: each
    // block repacks all of B, so a thin last block would pay that for little work.
    const int m_blocks = ceil_div(p.M, MC);
    const int mc_step = ceil_div(ceil_div(p.M, m_blocks), MR) * MR;
    // 64-bit block counters: with 32-bit ones, pc += KC past 2**31 - KC wraps and never ends
    for (int64_t ic = 0; ic < p.M; ic += mc_step) {
        const int mc = static_cast<int>(std::min<int64_t>(mc_step, p.M - ic));
        for (int64_t pc = 0; pc < p.K; pc += KC) {
            const int kc = static_cast<int>(std::min<int64_t>(KC, p.K - pc));
            const bool last = pc + kc == p.K;
            if (!a_in_place) pack_a(ks, p, static_cast<int>(ic), mc, static_cast<int>(pc), kc, pa);
            for (int64_t jc = 0; jc < p.N; jc += NC) {
                const int nc = static_cast<int>(std::min<int64_t>(NC, p.N - jc));
                if (!b_in_place) pack_b(ks, p, static_cast<int>(pc), kc, static_cast<int>(jc), nc, pb);
                const Slivers sl(mc, MR);
                for (int sv = 0; sv < sl.count; ++sv) {
                    const int m = sl.rows(sv);
                    const int i = static_cast<int>(ic) + sl.start(sv);
                    Operands op{};
                    if (a_in_place) {
                        a_in_place_operand(p, i, pc, op);
                    } else {
                        op.A = pa + static_cast<int64_t>(sv) * MR * kc;
                        op.a_stride = MR;
                    }
                    Epilogue ep = block_epilogue(p, i, pc, kc);
                    for (int jr = 0; jr < nc; jr += NR) {
                        const int n = std::min(NR, nc - jr);
                        const int j = static_cast<int>(jc) + jr;
                        if (b_in_place) {
                            b_in_place_operand(p, j, pc, op);
                        } else {
                            op.B = pb + static_cast<int64_t>(jr) * kc;
                            op.b_stride = NR;
                        }
                        ep.bias_col = last && p.bias_col ? p.bias_col + j : nullptr;
                        ks.kernel(kc, op, p.C + i * p.ldc + j, p.ldc, m, n, ep);
                    }
                }
            }
        }
    }
}

}  // namespace deepkern::cpu::gemm

namespace deepkern::cpu {
namespace {

using gemm::KernelSet;
using gemm::Problem;
using gemm::macs_of;

// ------------------------------------------------------------------ variant choice

bool cpu_supports(const std::string& name) {
    __builtin_cpu_init();
    if (name == "scalar") return true;
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (name == "avx2") return avx2;
    if (name == "avx512")
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    return false;
}

const KernelSet* best_variant() {
    if (cpu_supports("avx512")) return &gemm::avx512_kernels();
    if (cpu_supports("avx2")) return &gemm::avx2_kernels();
    return &gemm::scalar_kernels();
}

// The variant for `name`, or throws std::invalid_argument saying why not.
const KernelSet* variant_by_name(const std::string& name, const char* who) {
    if (name == "auto") return best_variant();
    if (name != "avx512" && name != "avx2" && name != "scalar")
        throw std::invalid_argument(std::string(who) + ": unknown GEMM variant '" + name +
                                    "' (expected 'avx512', 'avx2', 'scalar' or 'auto')");
    if (!cpu_supports(name))
        throw std::invalid_argument(std::string(who) + ": GEMM variant '" + name +
                                    "' needs instructions this CPU does not have");
    if (name == "avx512") return &gemm::avx512_kernels();
    if (name == "avx2") return &gemm::avx2_kernels();
    return &gemm::scalar_kernels();
}

// The active variant: from DEEPKERN_GEMM when the module loads, else the best the CPU has.
// A bad DEEPKERN_GEMM is not fatal at load time (that would make `import deepkern` fail);
// it leaves no variant, and every GEMM call reports the error until set_gemm_variant.
struct VariantState {
    std::atomic<const KernelSet*> active{nullptr};
    std::string env_error;  // written only at load time, before any GEMM can run

    VariantState() {
        const char* env = std::getenv("DEEPKERN_GEMM");
        if (env == nullptr || *env == '\0') {
            active = best_variant();
            return;
        }
        try {
            active = variant_by_name(env, "DEEPKERN_GEMM");
        } catch (const std::invalid_argument& e) {
            env_error = e.what();
        }
    }
};

VariantState& variant_state() {
    static VariantState state;
    return state;
}

// Read DEEPKERN_GEMM when the shared library is loaded, not at the first GEMM.
[[maybe_unused]] const bool kVariantReadAtLoad = (variant_state(), true);

const KernelSet& active_variant() {
    const KernelSet* k = variant_state().active.load(std::memory_order_acquire);
    if (k == nullptr) throw std::invalid_argument(variant_state().env_error);
    return *k;
}

// ------------------------------------------------------------------ dispatch

// K == 0: C = beta C (+ biases), ReLU.
void scale_only(const Problem& p) {
    for (int i = 0; i < p.M; ++i) {
        float* c = p.C + i * p.ldc;
        for (int j = 0; j < p.N; ++j) {
            float x = p.beta != 0.0f ? p.beta * c[j] : 0.0f;
            if (p.bias_col) x += p.bias_col[j];
            if (p.bias_row) x += p.bias_row[i];
            if (p.relu) x = x < 0.0f ? 0.0f : x;  // NaN propagates, like relu()
            c[j] = x;
        }
    }
}

// Below this many multiply-adds (about 10 us on one core) a second thread costs more than it
// saves: the pool's calls, and on a busy machine the wait for a descheduled worker, which can
// be far longer than the product itself.
constexpr int64_t kParallelMacs = 1 << 20;

void gemm_run(const KernelSet& ks, const Problem& p) {
    if (p.M <= 0 || p.N <= 0) return;
    if (p.K <= 0) {
        scale_only(p);
        return;
    }
    // (one register tile of C, however deep, is one thread's work)
    const bool threads = can_parallel() && max_threads() > 1 && macs_of(p.M, p.N, p.K) >= kParallelMacs &&
                         (p.M > ks.MR || p.N > ks.NR);
    if (threads)
        gemm::gemm_threaded(ks, p);
    else
        gemm::gemm_serial(ks, p);
}

}  // namespace

void sgemm(const GemmArgs& g) {
    const KernelSet& ks = active_variant();
    if (g.b_row_offsets != nullptr && g.trans_b)
        throw std::invalid_argument("sgemm: b_row_offsets needs a row-major (untransposed) B");
    Problem p{g.trans_a, g.trans_b, g.M, g.N, g.K, g.A, g.lda, g.B, g.ldb, g.b_row_offsets,
              g.beta, g.C, g.ldc, g.bias_col, g.bias_row, g.relu, g.trans_a && g.a_in_place};
    gemm_run(ks, p);
}

void sgemm(bool trans_a, bool trans_b, int M, int N, int K,
           const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc, const float* bias, bool relu) {
    GemmArgs g;
    g.trans_a = trans_a;
    g.trans_b = trans_b;
    g.M = M;
    g.N = N;
    g.K = K;
    g.A = A;
    g.lda = lda;
    g.B = B;
    g.ldb = ldb;
    g.beta = beta;
    g.C = C;
    g.ldc = ldc;
    g.bias_col = bias;
    g.relu = relu;
    sgemm(g);
}

std::string gemm_variant() { return active_variant().name; }

void set_gemm_variant(const std::string& name) {
    const KernelSet* k = variant_by_name(name, "set_gemm_variant");
    variant_state().active.store(k, std::memory_order_release);
}

}  // namespace deepkern::cpu
