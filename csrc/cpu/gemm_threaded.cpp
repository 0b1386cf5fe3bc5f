// The threaded fp32 GEMM driver: all threads on one problem, every operand packed once.
//
//   for each band of A rows        -- its slivers packed over all of K (caller's buffer, L3)
//    for each B group              -- a column block of op(B) and a run of its K blocks (packed: L2)
//     chunks claimed by the threads: (a run of A slivers, a segment of the group's column tiles)
//      for each K block of the group, for each NR-column tile of the segment: micro-kernel
//
// The threads share both packed operands instead of each packing its own copy of the one its
// piece of C shares with the others' (what cutting C into one independent piece per thread
// costs: measured in benchmarks/RESULTS.md). Each B group is one parallel call: its compute
// chunks first, then chunks that pack the next group into the other half of a double buffer.
// A thread that claims a packing chunk has no compute left in the call, so the group it
// overwrites in its L2 is one it no longer reads, and the packing overlaps the other thread's
// last compute chunks. A new band of A costs one more call, which packs it (and its first B
// group). A parallel call returns once every chunk is done, without waiting for a worker that
// never started (common/parallel.hpp): on a busy machine the caller simply does more chunks.
//
// Two shapes take a shortcut (one call, or one after packing A): when all of op(B) fits in one
// group and no chunk shares an A sliver, each chunk packs its own slivers of A (a_per_chunk);
// when C has few rows and B needs packing, each chunk takes a segment of the columns over all
// rows and packs its segment of B itself (b_per_chunk). Either way nothing is packed twice. With
// b_per_chunk a row-major A is read in place where its rows fall in enough L1 sets
// (a_rows_spread), so a linear layer's forward (100 x 256 x 256: 1.16x) is one parallel call.
//
// The calling thread keeps its buffers for its next GEMM (at most a band of 16 MiB and two
// groups of 640 KiB; each of the pool's workers keeps one (KC, MR) sliver of A and up to
// 640 KiB of B).
//
// Every element of C is summed over the K blocks of kc_step in order, by the same kernel as in
// the serial driver: the result does not depend on the thread count.
#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "common/parallel.hpp"
#include "cpu/gemm_driver.hpp"

namespace deepkern::cpu::gemm {
namespace {

// The caller's buffers: shared with the pool's threads during its calls, so a GEMM from another
// Python thread (which has its own) never touches them.
thread_local Scratch tl_band_a;    // (band slivers, K, MR)
thread_local Scratch tl_groups_b;  // two B groups
thread_local Scratch tl_sliver_a;  // one (kc, MR) sliver, for chunks that pack their own A
thread_local Scratch tl_segment_b; // a (kc, segment) of B, for chunks that pack their own B

// A band of packed A up to this size (then B is packed once per band): a 2048 x 2048 A in one.
// (6 MiB made 2048^3 three bands, packing all of B three times: 16 MiB ran it 1.05-1.06x faster
// on 2 threads, median of paired processes, 1536^3 1.01-1.08x, 1024^3 level.)
constexpr int64_t kBandBytes = int64_t{16} << 20;
// A B group up to this size: it streams from each core's L2 once per A sliver.
constexpr int64_t kGroupBytes = int64_t{640} << 10;
// Chunks of at least this many multiply-adds (~10 us on one core): claiming one costs ~0.1 us.
constexpr int64_t kChunkMacs = int64_t{1} << 18;
// Compute chunks per thread at least, where the shape allows, so that a thread that starts late
// or loses its core delays a small share of the work.
constexpr int kChunksPerThread = 4;
// At most this many A slivers (224 rows of the avx512 kernel) count as few (b_per_chunk): every
// column chunk then reads all of A, which for more rows would cost more than a call per B group.
constexpr int kFewSlivers = 16;
// B tiles per packing chunk.
constexpr int kPackTiles = 2;
constexpr int64_t kFloatBytes = sizeof(float);

struct Plan {
    Layout lay;
    int kc, k_blocks;        // K blocks (kc_step)
    int nc, ncp, j_blocks;   // column blocks of op(B): nc wide (ncp: rounded up to NR)
    int kb_per_group;        // K blocks per B group
    int groups_per_jb, groups;
    int band_slivers, bands; // A slivers per band
    int sp;                  // A slivers per compute chunk
    int seg_tiles, segs;     // column tiles per segment, segments per group
    bool a_per_chunk;        // each A sliver is used by one chunk only: that chunk packs it
    bool b_per_chunk;        // few A rows: chunks are column segments over all rows, each packs its B
    int64_t group_floats;    // one half of the B double buffer
};

// Whether a row-major A can be read in place by rows (Operands::a_rows) without its sliver's rows
// evicting each other from L1: rows lda * 4 bytes apart land in 64 / gcd(lda / 16, 64) of the 64
// sets of a 32 KiB 8-way L1 (a 4 KiB stride puts all of them in one set: 100 x 1024 x 256 ran
// 1.2x slower in place). At most 4 rows per set leave half the ways for B's and C's lines.
bool a_rows_spread(const KernelSet& ks, const Problem& p) {
    if (p.ta || p.b_offsets) return false;
    constexpr int64_t kLineFloats = 16, kSets = 64, kMostRowsPerSet = 4;
    if (p.lda % kLineFloats != 0) return true;  // rows start at different offsets within lines
    const int64_t sets = kSets / std::gcd(p.lda / kLineFloats, kSets);
    return ceil_div(ks.MR, static_cast<int>(sets)) <= kMostRowsPerSet;
}

Plan make_plan(const KernelSet& ks, const Problem& p, int nt) {
    const int MR = ks.MR, NR = ks.NR;
    Plan pl{};
    pl.lay = choose_layout(ks, p);
    pl.kc = kc_step(ks, p.K);
    pl.k_blocks = ceil_div(p.K, pl.kc);
    if (pl.lay.b_in_place) {  // B read where it is: one block of all columns and all of K
        pl.nc = pl.ncp = p.N;
        pl.j_blocks = 1;
        pl.kb_per_group = pl.k_blocks;
    } else {
        // all of op(B) in one group when it fits (one packing call per GEMM), else column blocks
        const int64_t whole = int64_t{ceil_div(p.N, NR)} * NR * p.K * kFloatBytes;
        pl.nc = whole <= kGroupBytes ? p.N : nc_step(ks, p.N);
        pl.ncp = ceil_div(pl.nc, NR) * NR;
        pl.kb_per_group = static_cast<int>(std::clamp<int64_t>(
            kGroupBytes / (int64_t{pl.ncp} * pl.kc * kFloatBytes), 1, pl.k_blocks));
    }
    pl.j_blocks = ceil_div(p.N, pl.nc);
    pl.groups_per_jb = ceil_div(pl.k_blocks, pl.kb_per_group);
    pl.groups = pl.j_blocks * pl.groups_per_jb;
    pl.group_floats = int64_t{pl.kb_per_group} * pl.ncp * pl.kc;

    const Slivers sl(p.M, MR);
    const int want = kChunksPerThread * nt;
    // Few A slivers (a C of at most a few hundred rows, all of A in one band) and a B to pack:
    // one call per B group, or a call that packs a B all chunks share, would cost more than the
    // product saves. Instead each chunk takes a segment of the columns over all rows and packs
    // that segment of B itself (each B tile is still packed once, into the L2 of the core that
    // reads it), after one call that packs A unless A is read in place.
    const bool a_one_band = pl.lay.a_in_place || int64_t{MR} * p.K * kFloatBytes * sl.count <= kBandBytes;
    // (B in one group with fewer column tiles than threads keeps the row chunks below.)
    const bool columns_for_all = pl.groups > 1 || ceil_div(p.N, NR) >= nt;
    if (!pl.lay.b_in_place && sl.count <= kFewSlivers && a_one_band && columns_for_all) {
        pl.b_per_chunk = true;
        if (!pl.lay.a_in_place && a_rows_spread(ks, p)) pl.lay.a_in_place = true;
        pl.nc = pl.ncp = p.N;
        pl.j_blocks = pl.groups_per_jb = pl.groups = 1;
        pl.kb_per_group = pl.k_blocks;
        pl.group_floats = 0;
        const int all_tiles = ceil_div(p.N, NR);
        // at least `want` segments, each at most a group's size per K block (L2, and the buffer)
        const int most = static_cast<int>(std::max<int64_t>(1, kGroupBytes / (int64_t{NR} * pl.kc * kFloatBytes)));
        pl.seg_tiles = std::min(ceil_div(all_tiles, std::min(all_tiles, want)), most);
        pl.segs = ceil_div(all_tiles, pl.seg_tiles);
        pl.band_slivers = pl.sp = sl.count;
        pl.bands = 1;
        return pl;
    }
    const int tiles = ceil_div(pl.nc, NR);
    // Column segments only where a band has too few slivers for `want` chunks.
    auto cut_columns = [&](int slivers) {
        pl.segs = std::clamp(ceil_div(want, slivers), 1, tiles);
        pl.seg_tiles = ceil_div(tiles, pl.segs);
        pl.segs = ceil_div(tiles, pl.seg_tiles);
    };
    cut_columns(sl.count);
    pl.a_per_chunk = !pl.lay.a_in_place && pl.groups == 1 && pl.segs == 1;
    pl.band_slivers = sl.count;
    if (!pl.lay.a_in_place && !pl.a_per_chunk) {
        const int64_t per_sliver = int64_t{MR} * p.K * kFloatBytes;
        const int fit = static_cast<int>(std::clamp<int64_t>(kBandBytes / per_sliver, 1, sl.count));
        pl.band_slivers = ceil_div(sl.count, ceil_div(sl.count, fit));  // equal bands
        cut_columns(pl.band_slivers);
    }
    pl.bands = ceil_div(sl.count, pl.band_slivers);
    // Slivers per chunk: enough work to be worth a claim, while keeping `want` chunks.
    const int64_t sliver_macs = int64_t{MR} * pl.seg_tiles * NR * pl.kb_per_group * pl.kc;
    const int by_work = ceil_div(kChunkMacs, std::max<int64_t>(1, sliver_macs));
    pl.sp = std::clamp(by_work, 1, std::max(1, pl.band_slivers / want));
    return pl;
}

// One step: the A slivers of band `band` against B group `g`.
struct Step {
    int band, g;
    int jc, ncj;   // the group's columns [jc, jc + ncj)
    int q0, q1;    // its K blocks
};

Step step_of(const Problem& p, const Plan& pl, int t) {
    Step st{};
    st.band = t / pl.groups;
    st.g = t % pl.groups;
    const int jb = st.g / pl.groups_per_jb;
    st.jc = jb * pl.nc;
    st.ncj = std::min(pl.nc, p.N - st.jc);
    st.q0 = (st.g % pl.groups_per_jb) * pl.kb_per_group;
    st.q1 = std::min(st.q0 + pl.kb_per_group, pl.k_blocks);
    return st;
}

class Threaded {
public:
    Threaded(const KernelSet& ks, const Problem& p, int nt)
        : ks_(ks), p_(p), pl_(make_plan(ks, p, nt)), sl_(p.M, ks.MR) {
        if (!pl_.lay.a_in_place && !pl_.a_per_chunk)
            pa_ = tl_band_a.get(static_cast<size_t>(pl_.band_slivers) * ks.MR * p.K);
        if (!pl_.lay.b_in_place && !pl_.b_per_chunk)
            pb_ = tl_groups_b.get(static_cast<size_t>(2 * pl_.group_floats));
    }

    void run() {
        const int steps = pl_.bands * pl_.groups;
        for (int t = 0; t < steps; ++t) {
            const Step st = step_of(p_, pl_, t);
            if (st.g == 0) {  // a new band: pack its A and the first B group (unless still there)
                const int na = pa_ ? band_count(st.band) : 0;
                const int nb = pl_.groups == 1 && st.band > 0 ? 0 : pack_b_chunks(st);
                parallel_chunks(na + nb, [&](int64_t c) {
                    if (c < na)
                        pack_band_sliver(st.band, static_cast<int>(c));
                    else
                        pack_b_chunk(st, t, static_cast<int>(c) - na);
                });
            }
            const int nc = compute_chunks(st.band);
            const bool pack_next = t + 1 < steps && (t + 1) % pl_.groups != 0;
            const Step next = pack_next ? step_of(p_, pl_, t + 1) : st;
            const int nb = pack_next ? pack_b_chunks(next) : 0;
            parallel_chunks(nc + nb, [&](int64_t c) {
                if (c < nc && pl_.b_per_chunk)
                    compute_b_chunk(st, static_cast<int>(c));
                else if (c < nc)
                    compute_chunk(st, t, static_cast<int>(c));
                else
                    pack_b_chunk(next, t + 1, static_cast<int>(c) - nc);
            });
        }
    }

private:
    int band_first(int band) const { return band * pl_.band_slivers; }
    int band_count(int band) const { return std::min(pl_.band_slivers, sl_.count - band_first(band)); }
    int compute_chunks(int band) const { return ceil_div(band_count(band), pl_.sp) * pl_.segs; }
    // The half of the B double buffer step t reads (a single group stays in the first half).
    float* group_buffer(int t) const { return pb_ + (pl_.groups == 1 ? 0 : t % 2) * pl_.group_floats; }

    // Sliver s (of the band) over all of K: (K, MR), K block q at q * kc * MR.
    void pack_band_sliver(int band, int s) const {
        const int sv = band_first(band) + s;
        pack_a(ks_, p_, sl_.start(sv), sl_.rows(sv), 0, p_.K,
               pa_ + static_cast<int64_t>(s) * ks_.MR * p_.K);
    }

    // Packing units of a group: (K block, column tile) pairs, kPackTiles tiles per chunk.
    int tiles_of(const Step& st) const { return ceil_div(st.ncj, ks_.NR); }
    int pack_b_chunks(const Step& st) const {
        return pb_ ? (st.q1 - st.q0) * ceil_div(tiles_of(st), kPackTiles) : 0;
    }

    // Group layout: K block q at (q - q0) * ncp * kc, tile jt of it at jt * NR * kcq.
    void pack_b_chunk(const Step& st, int t, int c) const {
        const int per_q = ceil_div(tiles_of(st), kPackTiles);
        const int q = st.q0 + c / per_q, jt0 = (c % per_q) * kPackTiles;
        const int k0 = q * pl_.kc, kcq = std::min(pl_.kc, p_.K - k0);
        const int cols = std::min(kPackTiles * ks_.NR, st.ncj - jt0 * ks_.NR);
        float* dst = group_buffer(t) + int64_t{q - st.q0} * pl_.ncp * pl_.kc + int64_t{jt0} * ks_.NR * kcq;
        pack_b(ks_, p_, k0, kcq, st.jc + jt0 * ks_.NR, cols, dst);
    }

    // A's operand for sliver s of the band (sv overall, rows from i) and the K block at k0.
    void a_operand(int s, int i, int m, int64_t k0, int kcq, Operands& op) const {
        if (pl_.lay.a_in_place) {
            a_in_place_operand(p_, i, k0, op);
        } else if (pa_) {
            op.A = pa_ + static_cast<int64_t>(s) * ks_.MR * p_.K + k0 * ks_.MR;
            op.a_stride = ks_.MR;
        } else {  // a_per_chunk: this chunk is the sliver's only user
            float* a = tl_sliver_a.get(static_cast<size_t>(ks_.MR) * pl_.kc);
            pack_a(ks_, p_, i, m, static_cast<int>(k0), kcq, a);
            op.A = a;
            op.a_stride = ks_.MR;
        }
    }

    // b_per_chunk: column segment c over all rows; per K block its B segment packed here.
    void compute_b_chunk(const Step& st, int c) const {
        const int NR = ks_.NR;
        const int jt_lo = c * pl_.seg_tiles, jt_hi = std::min(jt_lo + pl_.seg_tiles, tiles_of(st));
        const int cols = std::min(p_.N, jt_hi * NR) - jt_lo * NR;
        float* b = tl_segment_b.get(static_cast<size_t>(pl_.seg_tiles) * NR * pl_.kc);
        for (int q = 0; q < pl_.k_blocks; ++q) {
            const int64_t k0 = int64_t{q} * pl_.kc;
            const int kcq = static_cast<int>(std::min<int64_t>(pl_.kc, p_.K - k0));
            const bool last = k0 + kcq == p_.K;
            pack_b(ks_, p_, static_cast<int>(k0), kcq, jt_lo * NR, cols, b);
            for (int s = 0; s < sl_.count; ++s) {
                const int i = sl_.start(s), m = sl_.rows(s);
                Operands op{};
                a_operand(s, i, m, k0, kcq, op);
                op.b_stride = NR;
                Epilogue ep = block_epilogue(p_, i, k0, kcq);
                for (int jt = jt_lo; jt < jt_hi; ++jt) {
                    const int j = jt * NR;
                    op.B = b + int64_t{jt - jt_lo} * NR * kcq;
                    ep.bias_col = last && p_.bias_col ? p_.bias_col + j : nullptr;
                    ks_.kernel(kcq, op, p_.C + i * p_.ldc + j, p_.ldc, m, std::min(NR, p_.N - j), ep);
                }
            }
        }
    }

    void compute_chunk(const Step& st, int t, int c) const {
        const int NR = ks_.NR;
        const int run = c / pl_.segs, seg = c % pl_.segs;
        const int s_lo = run * pl_.sp, s_hi = std::min(s_lo + pl_.sp, band_count(st.band));
        const int jt_lo = seg * pl_.seg_tiles, jt_hi = std::min(jt_lo + pl_.seg_tiles, tiles_of(st));
        for (int s = s_lo; s < s_hi; ++s) {
            const int sv = band_first(st.band) + s;
            const int i = sl_.start(sv), m = sl_.rows(sv);
            for (int q = st.q0; q < st.q1; ++q) {
                const int64_t k0 = int64_t{q} * pl_.kc;
                const int kcq = static_cast<int>(std::min<int64_t>(pl_.kc, p_.K - k0));
                const bool last = k0 + kcq == p_.K;
                Operands op{};
                a_operand(s, i, m, k0, kcq, op);
                Epilogue ep = block_epilogue(p_, i, k0, kcq);
                const float* bq = pb_ ? group_buffer(t) + int64_t{q - st.q0} * pl_.ncp * pl_.kc : nullptr;
                for (int jt = jt_lo; jt < jt_hi; ++jt) {
                    const int j = st.jc + jt * NR;
                    if (pb_) {
                        op.B = bq + int64_t{jt} * NR * kcq;
                        op.b_stride = NR;
                    } else {
                        b_in_place_operand(p_, j, k0, op);
                    }
                    ep.bias_col = last && p_.bias_col ? p_.bias_col + j : nullptr;
                    ks_.kernel(kcq, op, p_.C + i * p_.ldc + j, p_.ldc, m, std::min(NR, st.jc + st.ncj - j), ep);
                }
            }
        }
    }

    const KernelSet& ks_;
    const Problem& p_;
    const Plan pl_;
    const Slivers sl_;
    float* pa_ = nullptr;  // the band's packed A, or null (read in place / packed per chunk)
    float* pb_ = nullptr;  // the B double buffer, or null (read in place)
};

}  // namespace

void gemm_threaded(const KernelSet& ks, const Problem& p) {
    Threaded(ks, p, max_threads()).run();
}

}  // namespace deepkern::cpu::gemm
