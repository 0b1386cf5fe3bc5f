// sgemm driver: run-time choice of micro-kernel, OpenMP split, packing and cache blocking.
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
// Threads: the C matrix is cut into tm x tn independent pieces (one per thread), each run by
// the serial driver with its own thread-local packing buffers. Inside a parallel chunk (conv2d
// over images) sgemm runs on the calling thread only. Every element of C is summed over K in the
// same order however C is cut, so the result does not depend on the thread count.
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "common/parallel.hpp"
#include "cpu/gemm_kernels.hpp"
#include "cpu/matmul.hpp"

namespace deepkern::cpu {
namespace {

using gemm::Epilogue;
using gemm::KernelSet;
using gemm::Operands;

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

// ------------------------------------------------------------------ problem and scratch

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
};

// A 64-byte aligned, grow-only buffer; thread_local instances make the driver re-entrant.
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

thread_local Scratch tl_pack_a;
thread_local Scratch tl_pack_b;

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols: a transposing copy in
// 4 x 4 SSE blocks (baseline x86-64), used to pack A rows and transposed-B rows k-major.
void transpose_copy(const float* src, int64_t ld_src, int rows, int cols, float* dst, int64_t ld_dst) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float* s0 = src + r * ld_src;
        const float* s1 = s0 + ld_src;
        const float* s2 = s1 + ld_src;
        const float* s3 = s2 + ld_src;
        int c = 0;
        for (; c + 4 <= cols; c += 4) {
            __m128 x0 = _mm_loadu_ps(s0 + c), x1 = _mm_loadu_ps(s1 + c);
            __m128 x2 = _mm_loadu_ps(s2 + c), x3 = _mm_loadu_ps(s3 + c);
            _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
            float* d = dst + c * ld_dst + r;
            _mm_storeu_ps(d, x0);
            _mm_storeu_ps(d + ld_dst, x1);
            _mm_storeu_ps(d + 2 * ld_dst, x2);
            _mm_storeu_ps(d + 3 * ld_dst, x3);
        }
        for (; c < cols; ++c) {
            float* d = dst + c * ld_dst + r;
            d[0] = s0[c];
            d[1] = s1[c];
            d[2] = s2[c];
            d[3] = s3[c];
        }
    }
    for (; r < rows; ++r) {
        const float* s = src + r * ld_src;
        for (int c = 0; c < cols; ++c) dst[c * ld_dst + r] = s[c];
    }
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

// Packs op(A)[i0:i0+mc, k0:k0+kc] as slivers (see Slivers), sliver s at dst + s*MR*kc, each
// (kc, MR) k-major. Rows past a sliver's height are left unset: the kernels never read them.
void pack_a(const Problem& p, int MR, int i0, int mc, int k0, int kc, float* dst) {
    const Slivers sl(mc, MR);
    for (int s = 0; s < sl.count; ++s) {
        const int ir = sl.start(s), rows = sl.rows(s);
        float* d = dst + static_cast<int64_t>(s) * MR * kc;
        if (!p.ta) {  // A is (M, K): rows of A become columns of the sliver
            transpose_copy(p.A + (i0 + ir) * p.lda + k0, p.lda, rows, kc, d, MR);
        } else {      // A is (K, M): each k already holds the sliver's rows contiguously
            const float* a = p.A + static_cast<int64_t>(k0) * p.lda + i0 + ir;
            for (int k = 0; k < kc; ++k)  // rows <= MR floats: an inline loop, not a memcpy call
                for (int r = 0; r < rows; ++r) d[k * MR + r] = a[k * p.lda + r];
        }
    }
}

// Packs op(B)[k0:k0+kc, j0:j0+nc] as slivers of NR columns, each (kc, NR) k-major.
void pack_b(const Problem& p, int NR, int k0, int kc, int j0, int nc, float* dst) {
    for (int jr = 0; jr < nc; jr += NR) {
        const int cols = std::min(NR, nc - jr);
        float* d = dst + static_cast<int64_t>(jr) * kc;
        if (!p.tb) {  // B is (K, N): copy row segments
            const float* s = p.B + static_cast<int64_t>(k0) * p.ldb + j0 + jr;
            for (int k = 0; k < kc; ++k)  // cols <= NR floats: an inline loop, not a memcpy call
                for (int c = 0; c < cols; ++c) d[k * NR + c] = s[k * p.ldb + c];
        } else {      // B is (N, K): rows of B become columns of the sliver
            transpose_copy(p.B + (j0 + jr) * p.ldb + k0, p.ldb, cols, kc, d, NR);
        }
    }
}

// Below this many multiply-adds the operands are read in place where the layout allows it
// (packing would cost about as much as the product).
constexpr int64_t kSmallMacs = 48 * 48 * 48;
// A row-major B up to this size (half of a 1 MiB L2) is read in place.
constexpr int64_t kInPlaceBBytes = 512 * 1024;

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

// ceil(a / b) for a >= 0, b >= 1; in 64 bits, as a + b - 1 overflows an int for a near 2**31
int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// M * N * K multiply-adds; in double, as the product of three dimensions can overflow 64 bits
double macs_of(int64_t M, int64_t N, int64_t K) { return static_cast<double>(M) * N * K; }

// From this many multiply-adds the threads share packed B blocks (gemm_shared_b).
constexpr int64_t kSharedBMacs = int64_t{32} << 20;

// Which operands the driver reads in place instead of packing.
struct Layout {
    bool a_in_place, b_in_place;
};

Layout choose_layout(const KernelSet& ks, const Problem& p) {
    const bool small = macs_of(p.M, p.N, p.K) <= kSmallMacs;
    Layout l{};
    // A transposed A is read in place when small (each k holds the sliver's rows contiguously).
    // A row-major A is read by rows when K is tiny (its MR x K sliver is a few cache lines) or
    // C has at most two column tiles: each A sliver is then used once or twice, and packing
    // (a transpose) would cost more than the product saves. The kernel cannot read A by rows
    // while following B row offsets.
    if (p.ta)
        l.a_in_place = small;
    else
        l.a_in_place = p.b_offsets == nullptr && (p.K <= 16 || p.N <= 2 * ks.NR);
    // A row-major B is read in place when small, when K is tiny, or when all of it sits in L2
    // anyway (its slivers then stream from L2 just as packed ones would). B rows given by
    // offsets are always read in place: the kernel follows the offsets.
    l.b_in_place = p.b_offsets != nullptr ||
                   (!p.tb && (small || p.K <= 16 ||
                              static_cast<double>(p.K) * p.ldb * sizeof(float) <= kInPlaceBBytes));
    return l;
}

// The whole problem on the calling thread.
void gemm_serial(const KernelSet& ks, const Problem& p) {
    if (p.M <= 0 || p.N <= 0) return;
    if (p.K <= 0) {
        scale_only(p);
        return;
    }
    const int MR = ks.MR, NR = ks.NR;
    const int MC = ks.MC, NC = ks.NC;
    const int KC = ks.KC;
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
            const bool first = pc == 0, last = pc + kc == p.K;
            if (!a_in_place) pack_a(p, MR, ic, mc, pc, kc, pa);
            for (int64_t jc = 0; jc < p.N; jc += NC) {
                const int nc = static_cast<int>(std::min<int64_t>(NC, p.N - jc));
                if (!b_in_place) pack_b(p, NR, pc, kc, jc, nc, pb);
                const Slivers sl(mc, MR);
                for (int sv = 0; sv < sl.count; ++sv) {
                    const int m = sl.rows(sv);
                    const int i = static_cast<int>(ic) + sl.start(sv);
                    Operands op{};
                    if (a_in_place) {
                        op.A = p.ta ? p.A + static_cast<int64_t>(pc) * p.lda + i : p.A + i * p.lda + pc;
                        op.a_stride = p.lda;
                        op.a_rows = !p.ta;
                    } else {
                        op.A = pa + static_cast<int64_t>(sv) * MR * kc;
                        op.a_stride = MR;
                        op.a_rows = false;
                    }
                    Epilogue ep{};
                    ep.beta = first ? p.beta : 1.0f;
                    ep.bias_row = last && p.bias_row ? p.bias_row + i : nullptr;
                    ep.relu = last && p.relu;
                    for (int jr = 0; jr < nc; jr += NR) {
                        const int n = std::min(NR, nc - jr);
                        const int j = static_cast<int>(jc) + jr;
                        if (p.b_offsets) {
                            op.B = p.B + j;
                            op.b_offsets = p.b_offsets + pc;
                        } else if (b_in_place) {
                            op.B = p.B + static_cast<int64_t>(pc) * p.ldb + j;
                            op.b_stride = p.ldb;
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

// All threads on one problem, sharing each packed B block (after GotoBLAS's threaded driver):
// the threads pack a KC x NC block of B together, then claim the MR-row slivers of A
// dynamically; each packs the sliver it takes (it stays in L1) and runs it against the whole
// block. Nothing is packed twice, and a thread that loses its core delays only the sliver in
// hand. Two parallel calls per B block (pack it, then use it): each returns once its chunks are
// done, without waiting for a worker that never started.
void gemm_shared_b(const KernelSet& ks, const Problem& p) {
    const int MR = ks.MR, NR = ks.NR, KC = ks.KC, NC = ks.NC;
    const Layout lay = choose_layout(ks, p);
    const size_t pb_bytes = (static_cast<size_t>(std::min(NC, p.N) + NR) * KC * sizeof(float) + 63) / 64 * 64;
    std::unique_ptr<float, decltype(&std::free)> pb_owner(static_cast<float*>(std::aligned_alloc(64, pb_bytes)),
                                                          &std::free);
    float* pb = pb_owner.get();
    if (pb == nullptr) throw std::bad_alloc();
    const Slivers sl(p.M, MR);
    for (int64_t jc = 0; jc < p.N; jc += NC) {  // 64-bit block counters (see gemm_serial)
        const int nc = static_cast<int>(std::min<int64_t>(NC, p.N - jc));
        const int b_slivers = ceil_div(nc, NR);
        for (int64_t pc = 0; pc < p.K; pc += KC) {
            const int kc = static_cast<int>(std::min<int64_t>(KC, p.K - pc));
            const bool first = pc == 0, last = pc + kc == p.K;
            parallel_for(0, b_slivers, 4, [&](int64_t js0, int64_t js1) {
                for (int js = static_cast<int>(js0); js < js1; ++js)
                    pack_b(p, NR, pc, kc, jc + js * NR, std::min(NR, nc - js * NR),
                           pb + static_cast<int64_t>(js) * NR * kc);
            });
            parallel_chunks(sl.count, [&](int64_t sv64) {
                const int sv = static_cast<int>(sv64);
                const int m = sl.rows(sv), i = sl.start(sv);
                Operands op{};
                if (lay.a_in_place) {
                    op.A = p.ta ? p.A + static_cast<int64_t>(pc) * p.lda + i : p.A + i * p.lda + pc;
                    op.a_stride = p.lda;
                    op.a_rows = !p.ta;
                } else {
                    float* pa = tl_pack_a.get(static_cast<size_t>(MR) * KC);
                    pack_a(p, MR, i, m, pc, kc, pa);
                    op.A = pa;
                    op.a_stride = MR;
                }
                Epilogue ep{};
                ep.beta = first ? p.beta : 1.0f;
                ep.bias_row = last && p.bias_row ? p.bias_row + i : nullptr;
                ep.relu = last && p.relu;
                op.b_stride = NR;
                for (int jr = 0; jr < nc; jr += NR) {
                    const int j = jc + jr;
                    op.B = pb + static_cast<int64_t>(jr) * kc;
                    ep.bias_col = last && p.bias_col ? p.bias_col + j : nullptr;
                    ks.kernel(kc, op, p.C + i * p.ldc + j, p.ldc, m, std::min(NR, nc - jr), ep);
                }
            });
        }
    }
}

// The rows [i0, i0+mc) x columns [j0, j0+nc) of C as a problem of its own.
Problem piece(const Problem& p, int i0, int mc, int j0, int nc) {
    Problem q = p;
    q.M = mc;
    q.N = nc;
    q.A = p.ta ? p.A + i0 : p.A + i0 * p.lda;
    q.B = p.tb ? p.B + j0 * p.ldb : p.B + j0;
    q.C = p.C + i0 * p.ldc + j0;
    if (p.bias_col) q.bias_col = p.bias_col + j0;
    if (p.bias_row) q.bias_row = p.bias_row + i0;
    return q;
}

// Below this many multiply-adds (about 10 us on one core) a second thread costs more than it
// saves: fork/join and duplicated packing, and on a busy machine the wait for a descheduled
// worker, which can be far longer than the product itself.
constexpr int64_t kParallelMacs = 1 << 20;

void gemm_run(const KernelSet& ks, const Problem& p) {
    if (p.M <= 0 || p.N <= 0) return;
    const double macs = macs_of(p.M, p.N, std::max(p.K, 1));
    int nt = can_parallel() ? max_threads() : 1;
    if (macs < kParallelMacs) nt = 1;
    nt = std::min(nt, ceil_div(p.M, ks.MR) * ceil_div(p.N, ks.NR));
    if (nt <= 1) {
        gemm_serial(ks, p);
        return;
    }
    // Cut C into tm x tn pieces (tm * tn = nt), choosing the grid with the least per-thread
    // cost, in vector FMAs per unit of K: the piece's tile work, plus the packing it repeats
    // for its rows of A and columns of B (about half a cycle per transposed float, a quarter
    // per copied one).
    int tm = nt, tn = 1;
    double best = -1.0;
    for (int a = 1; a <= nt; ++a) {
        if (nt % a != 0) continue;
        const int b = nt / a;
        const int rows = std::min(p.M, ceil_div(ceil_div(p.M, ks.MR), a) * ks.MR);
        const int cols = std::min(p.N, ceil_div(ceil_div(p.N, ks.NR), b) * ks.NR);
        const Layout lay = choose_layout(ks, piece(p, 0, rows, 0, cols));
        double cost = static_cast<double>(rows) * ceil_div(cols, 16);
        if (!lay.a_in_place) cost += rows * (p.ta ? 0.25 : 0.5);
        if (!lay.b_in_place) cost += cols * (p.tb ? 0.5 : 0.25);
        if (best < 0.0 || cost < best) {
            best = cost;
            tm = a;
            tn = b;
        }
    }
    // Each thread's share is cut further into up to 4 chunks handed out dynamically, so that on a
    // busy machine a worker that shares its core (with another process, or another library's
    // spinning thread pool) does not hold up the rest. A chunk repacks the operand it shares
    // with its neighbours, so chunks stay larger where that operand is packed (256 rows/columns
    // keep the repacking under 2% of the chunk's work).
    const Layout whole = choose_layout(ks, piece(p, 0, ceil_div(p.M, tm), 0, ceil_div(p.N, tn)));
    // Rows split and B packed: share the packed B rather than pack it once per thread, when the
    // product is large enough (~150 us on two cores) that two barriers per B block cost nothing.
    if (tn == 1 && !whole.b_in_place && p.M >= 4 * ks.MR * tm && macs >= kSharedBMacs) {
        gemm_shared_b(ks, p);
        return;
    }
    const int min_rows = whole.b_in_place ? 128 : 256;
    const int min_cols = whole.a_in_place ? 128 : 256;
    const int fm = std::clamp(ceil_div(p.M, tm) / min_rows, 1, 4);
    const int fn = std::clamp(ceil_div(p.N, tn) / min_cols, 1, 4);
    const int gm = tm * fm, gn = tn * fn;  // chunk grid
    const int rows_per = ceil_div(ceil_div(p.M, ks.MR), gm) * ks.MR;
    const int cols_per = ceil_div(ceil_div(p.N, ks.NR), gn) * ks.NR;
    parallel_chunks(gm * gn, [&](int64_t t) {
        const int64_t i0 = (t / gn) * rows_per, j0 = (t % gn) * cols_per;  // 64-bit: may pass 2**31
        if (i0 >= p.M || j0 >= p.N) return;
        gemm_serial(ks, piece(p, static_cast<int>(i0), static_cast<int>(std::min<int64_t>(rows_per, p.M - i0)),
                              static_cast<int>(j0), static_cast<int>(std::min<int64_t>(cols_per, p.N - j0))));
    });
}

}  // namespace

void sgemm(const GemmArgs& g) {
    const KernelSet& ks = active_variant();
    if (g.b_row_offsets != nullptr && g.trans_b)
        throw std::invalid_argument("sgemm: b_row_offsets needs a row-major (untransposed) B");
    Problem p{g.trans_a, g.trans_b, g.M, g.N, g.K, g.A, g.lda, g.B, g.ldb, g.b_row_offsets,
              g.beta, g.C, g.ldc, g.bias_col, g.bias_row, g.relu};
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
