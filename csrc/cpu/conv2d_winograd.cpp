// Winograd F(2x2, 3x3) convolution (conv2d_winograd.hpp).
//
// A 2x2 block of outputs of a 3x3 correlation comes from a 4x4 block d of input:
//   y = A^T [ (G g G^T) . (B^T d B) ] A        (. elementwise, 16 products instead of 36)
// with the weight transform U = G g G^T once per call, (16, OC, C), the input transform
// V = B^T d B per tile, and per group of tiles the 16 elementwise products summed over the input
// channels become 16 GEMMs, one per tile position xi:
//   M_xi (OC, T) = U_xi (OC, C) @ V_xi (C, T)
// then the output transform A^T M A (+ bias). Tiles are 2x2 blocks of the output (partial at an
// odd edge: the extra row/column is computed on zero padding and dropped). A group is a few
// whole images (a few hundred tiles, enough columns for the GEMMs), or for large images bands of
// tile rows of one image; groups run in parallel (as many as the threads can share evenly; each
// tile's arithmetic does not depend on its group, so results are bit-identical for any thread
// count).
//
// The input gradient is the full correlation of gy (padded by 2 - P) with the weights turned
// 180 degrees and their channel axes swapped: the same kernel with U built from that.
//
// Non-finite inputs: B^T d B turns an inf into inf - inf = NaN where the direct sum gives inf,
// so the input transform also sums 0 * (some of its outputs that together hold every input read):
// NaN iff an input is inf or NaN. The weight transform checks U the same way. On either the call
// declines and the caller runs the direct path: results on non-finite data are exactly the
// direct path's.
//
// bf16 (conv2d_bf16.cpp calls with bf16 = true): the same transforms in fp32; U is rounded to bf16
// and packed once per call, each V_xi while it is packed for its product, and the 16 products run
// on the bf16 GEMM (vdpbf16ps, fp32 sums): multiply_tiles is the one place that differs.
#include "cpu/conv2d_winograd.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "common/parallel.hpp"
#include "cpu/conv2d_winograd_tiles.hpp"
#include "cpu/gemm_bf16.hpp"
#include "cpu/gemm_driver.hpp"  // gemm::Scratch
#include "cpu/matmul.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {

namespace wino {
const TileKernels& generic_tiles() {
    static const TileKernels k = make_tile_kernels();
    return k;
}
}  // namespace wino

WinogradMode winograd_mode() {
    const char* env = std::getenv("DEEPKERN_WINOGRAD");
    const std::string v = env ? env : "";
    if (v.empty() || v == "auto") return WinogradMode::automatic;
    if (v == "on") return WinogradMode::on;
    if (v == "off") return WinogradMode::off;
    if (v == "f2") return WinogradMode::f2;
    if (v == "f4") return WinogradMode::f4;
    throw std::invalid_argument("DEEPKERN_WINOGRAD: unknown mode '" + v + "' (expected auto, on, off, f2 or f4)");
}

namespace {

using wino::kLanes;

const wino::TileKernels& tiles() {
    switch (simd_isa()) {
        case SimdIsa::avx512: return wino::avx512_tiles();
        case SimdIsa::avx2: return wino::avx2_tiles();
        default: return wino::generic_tiles();
    }
}

// 3x3, stride 1, padding at most 2 (the input gradient's padding 2 - P must not be negative),
// something to compute
bool winograd_fits(const Conv2dShape& s) {
    return s.KH == 3 && s.KW == 3 && s.SH == 1 && s.SW == 1 && s.PH >= 0 && s.PH <= 2 && s.PW >= 0 && s.PW <= 2 &&
           s.N > 0 && s.C > 0 && s.OC > 0 && s.OH > 0 && s.OW > 0;
}

// Whether the mode picks Winograd for this layer. k_in: the GEMMs' reduction (the input planes'
// channels), m_out: their rows (the output planes' channels), out_plane: an output plane's size.
// auto, from measurements (1 thread, CPU time, best of 5, direct / Winograd in ms; forward with
// the fused ReLU + pool in brackets; see benchmarks/RESULTS.md for 2 threads):
//   32 -> 64 on 13x13 (seed conv2, batch 128): forward 6.96 / 5.42 (7.01 / 4.71), input grad 6.70 / 8.85
//   3 -> 32 on 150x150 (batch 32):              forward 20.9 / 33.4 (19.6 / 29.2)
//   32 -> 64 on 74x74:                          forward 61.0 / 45.0 (59.7 / 41.0), input grad 96.7 / 56.2
//   64 -> 64 on 36x36:                          forward 30.2 / 19.4 (28.2 / 18.5), input grad 33.5 / 20.2
//   64 -> 64 on 17x17:                          forward 6.21 / 4.48 (6.14 / 3.25), input grad 6.78 / 5.41
// so: at least 16 channels on both sides (3 input channels make 16 GEMMs with K = 3), output
// planes of at least 16x16 for the input gradient (13x13 loses: its 7x7 tiles on a 2-padded
// 11x11 gradient are a third more tiles than outputs, on 64 planes per image to transform), and
// a batch that gives every thread an image (the groups run in parallel; the direct path threads
// its GEMMs instead).
// Returns the output tile size to use (2: F(2x2, 3x3), 4: F(4x4, 3x3)), or 0 for the direct path.
// auto takes F(4x4, 3x3) from output planes of 32x32: 4x4 tiles then waste little on the
// edges. (1 thread, CPU time, best of 5, F(2x2) / F(4x4) in ms: 64 -> 64 on 36x36 forward 19.3 /
// 17.5, input grad 24.8 / 18.3; 32 -> 64 on 74x74 forward 46.9 / 36.0, input grad 50.3 / 50.4;
// but 64 -> 64 on 17x17 forward 4.2 / 4.3, pooled 3.5 / 4.5, input grad 5.4 / 6.2, and the seed
// conv2 on 13x13 forward 5.3 / 5.7, pooled 4.1 / 5.8, input grad 7.1 / 10.4.) Its rounding errors
// are about 10x F(2x2)'s (transforms with 4, 5 and 8; see tests/test_conv_winograd.py).
constexpr int64_t kF4MinPlane = 32 * 32;
// bf16 (products rounded to bf16; the alternative is the bf16 im2col GEMM, conv2d_bf16.cpp): the
// same layers, always with F(2x2, 3x3). 1 thread, CPU time, best of 3, bf16 F(2x2) / F(4x4) / bf16
// im2col (fp32 auto) in ms: seed conv2 13x13 forward 4.30 / 6.10 / 4.50 (5.76), pooled 3.83 / 5.94 /
// 4.34, input grad 6.9 / 10.2 / 3.3; 32 -> 64 on 74x74 forward 30.2 / 32.6 / 57.6 (38.0), input grad
// 39 / 40 / 77; 64 -> 64 on 36x36 forward 13.8 / 16.3 / 23.1 (22.7); 64 -> 64 on 17x17 forward 3.4 /
// 4.7 / 4.2, pooled 2.4 / 3.9 / 4.1. A second run (lower load): 74x74 forward 31.0 / 27.3, 36x36
// 12.2 / 11.7, 17x17 3.2 / 4.9. F(4x4) is at best ~10% faster in bf16 (the products are half the
// cost, the transforms are not) and rounding its transformed values costs ~6x F(2x2)'s error (up to
// ~20x at single outputs; bf16's 2^-8 times the magnitudes its constants 4, 5 and 8 build up).

int winograd_wanted(const Conv2dShape& s, int k_in, int m_out, int64_t out_plane, int64_t min_plane, bool bf16) {
    const WinogradMode mode = winograd_mode();
    if (mode == WinogradMode::off || !winograd_fits(s)) return 0;
    if (mode == WinogradMode::f2 || mode == WinogradMode::on) return 2;
    if (mode == WinogradMode::f4) return 4;
    const bool faster = k_in >= 16 && m_out >= 16 && out_plane >= min_plane && s.N >= max_threads();
    return !faster ? 0 : !bf16 && out_plane >= kF4MinPlane ? 4 : 2;
}

int round_up(int v, int to) { return (v + to - 1) / to * to; }
int ceil_div(int v, int by) { return (v + by - 1) / by; }

// U (a*a, R, K) = G g G^T for every (row, col) pair, a = m + 2, g the 3x3 kernel w[o, c]
// (forward: row o, col c) or, for the input gradient (flip), w[o, c] turned 180 degrees at row c,
// col o. Computed in double, rounded once. Returns false on inf or NaN.
//   m = 2: G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
//   m = 4: G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
//               [1/24, -1/12, 1/6], [0, 0, 1]]
bool transform_weights(const float* w, int OC, int C, bool flip, int m, float* U) {
    static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    static const double G4[6][3] = {{1.0 / 4, 0, 0},         {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                    {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    const int a = m + 2;
    const int R = flip ? C : OC, K = flip ? OC : C;
    const int64_t plane = static_cast<int64_t>(R) * K;
    float check = 0.0f;
    for (int o = 0; o < OC; ++o)
        for (int c = 0; c < C; ++c) {
            const float* src = w + (static_cast<int64_t>(o) * C + c) * 9;
            double g[3][3], gg[6][3];
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) g[i][j] = flip ? src[(2 - i) * 3 + (2 - j)] : src[i * 3 + j];
            for (int p = 0; p < a; ++p)  // G g
                for (int j = 0; j < 3; ++j) {
                    const double* G = m == 2 ? G2[p] : G4[p];
                    gg[p][j] = G[0] * g[0][j] + G[1] * g[1][j] + G[2] * g[2][j];
                }
            const int64_t at = flip ? static_cast<int64_t>(c) * K + o : static_cast<int64_t>(o) * K + c;
            for (int p = 0; p < a; ++p)  // (G g) G^T
                for (int q = 0; q < a; ++q) {
                    const double* G = m == 2 ? G2[q] : G4[q];
                    const float u = static_cast<float>(gg[p][0] * G[0] + gg[p][1] * G[1] + gg[p][2] * G[2]);
                    U[(p * a + q) * plane + at] = u;
                    check += u * 0.0f;
                }
        }
    return check == 0.0f;
}

// Tiles per group of GEMMs (T): enough columns that the 16 products run near the GEMM's speed.
// (1 thread, CPU time, best of 5; forward / input gradient in ms at 96, 192, 384 tiles: seed
// 32->64 on 13x13, batch 128: 5.9 / 8.8, 5.5 / 7.2, 5.6 / 7.2; 64->64 on 36x36, batch 32: 21.0 /
// 20.9, 18.9 / 21.2, 17.7 / 18.9; 32->64 on 74x74: 50.8 / 52.8, 45.7 / 47.4, 42.9 / 49.5.)
constexpr int kGroupTiles = 384;
// F(4x4, 3x3), 36 points per tile: 128 tiles gave 37.7 / 61.8 ms (74x74 layer forward / input
// grad), 256 tiles 36.0 / 50.4
constexpr int kGroupTiles4 = 256;

// One Winograd correlation: in planes (N, Cin, H, W) padded by (PH, PW), out planes
// (N, Cout, OH, OW), of which rows < OHc and columns < OWc are computed.
struct Plan {
    int N, Cin, H, W, PH, PW;
    int Cout, OH, OW;
    int m, nxi;       // output tile size (2 or 4), points per tile ((m + 2)^2)
    int TH, TW, TWv;  // tiles computed; TW rounded up to whole vector blocks
    int groups, G;    // groups of whole images, the most images in one (sizes differ by at most 1)
    int band;         // tile rows per GEMM batch
    int64_t ld;       // row stride of V and M: a batch's tiles plus slack for the last block's spill
    int OHb, OWb;     // an output plane as computed (whole tiles)

    Plan(int n, int cin, int h, int w, int ph, int pw, int cout, int oh, int ow, int ohc, int owc, int tile)
        : N(n), Cin(cin), H(h), W(w), PH(ph), PW(pw), Cout(cout), OH(oh), OW(ow), m(tile) {
        nxi = (m + 2) * (m + 2);
        TH = (ohc + m - 1) / m;
        TW = (owc + m - 1) / m;
        TWv = round_up(TW, kLanes);
        const int group_tiles = m == 2 ? kGroupTiles : kGroupTiles4, per_image = TH * TW;
        // The groups the tile count asks for, rounded up to a multiple of the threads, of nearly
        // equal sizes: the seed's 32 pooled images of 25 tiles went in groups of 15, 15 and 2, so
        // one of two threads did 17 images while the other did 15 (now 4 groups of 8). A tile's
        // arithmetic does not depend on its group, so the bits do not depend on the threads.
        const int threads = can_parallel() ? max_threads() : 1;
        groups = ceil_div(N, std::clamp(group_tiles / per_image, 1, std::max(N, 1)));
        groups = std::min(N, ceil_div(groups, threads) * threads);
        G = std::max(1, ceil_div(N, std::max(groups, 1)));
        band = G > 1 ? TH : std::clamp(group_tiles / TW, 1, TH);
        ld = G * band * TW + kLanes;
        OHb = m * TH;
        OWb = m * TW;
    }
    // an output channel's (OHb, OWb) plane and room for its last row's spill (place_tiles: bands
    // are placed after the channels after them, so the room is per channel); an image's block
    int64_t chan() const { return static_cast<int64_t>(OHb) * OWb + m * (TWv - TW); }
    int64_t block() const { return Cout * chan(); }
    int group_start(int gi) const { return static_cast<int>(int64_t{gi} * N / groups); }
    int64_t work() const { return m == 2 ? wino::input_work(band, TW, TWv) : wino::input_work4(band, TW, TWv); }
};

// A group's buffers: grow-only per thread, as the GEMM's packing buffers (fresh pages on every
// call cost more than the transforms). Written before read but for the lanes past the last
// tile, which only ever reach lanes past it again; work is zeroed per call, so those lanes are
// finite (they feed no result, but NaN garbage would trip the non-finite check).
thread_local gemm::Scratch tl_v, tl_m, tl_yt, tl_blocks, tl_work, tl_gy, tl_vp;

struct Buffers {
    float *v, *m, *yt, *blocks, *work, *gy;
    uint32_t* vp;  // bf16: one V_xi (Cin, ld) packed as the bf16 GEMM's B panels; else null
    Buffers(const Plan& p, int64_t gy_floats, bool bf16)
        : v(tl_v.get(p.nxi * p.Cin * p.ld)),
          m(tl_m.get(p.nxi * p.Cout * p.ld)),
          yt(tl_yt.get(p.m * p.m * p.ld)),
          blocks(tl_blocks.get(p.G * p.block())),
          work(tl_work.get(p.work())),
          gy(tl_gy.get(std::max<int64_t>(gy_floats, 1))),
          // 32-bit pairs in a float buffer: malloc'd memory, only ever accessed as uint32_t
          vp(bf16 ? reinterpret_cast<uint32_t*>(tl_vp.get(bf16::packed_b_pairs(p.Cin, p.ld))) : nullptr) {
        std::fill(work, work + p.work(), 0.0f);
    }
};

// The transformed weights U (nxi, R, K), and in bf16 the same rounded and packed once per call as
// the bf16 GEMM's A panels: Up (nxi, packed_a_pairs(R, K)) pairs (null in fp32)
struct Weights {
    const float* U;
    const uint32_t* Up;
};

Weights pack_weights(const float* U, int nxi, int R, int K, bool bf16, std::unique_ptr<uint32_t[]>& Up) {
    if (!bf16) return {U, nullptr};
    const int64_t per_xi = bf16::packed_a_pairs(R, K);
    Up.reset(new uint32_t[nxi * per_xi]);
    for (int xi = 0; xi < nxi; ++xi)
        bf16::pack_a_all(R, K, U + xi * static_cast<int64_t>(R) * K, K, 1, Up.get() + xi * per_xi);
    return {U, Up.get()};
}

// The nxi products of a batch of T tiles: M_xi (R, T) = U_xi (R, K) @ V_xi (K, T), row strides ld.
// The one place for the multiply step: fp32 through sgemm, or (w.Up set) in bf16: V_xi rounded to
// bf16 while it is packed into vp (packed_b_pairs(K, ld) pairs), products summed in fp32.
void multiply_tiles(int nxi, const Weights& w, const float* V, float* M, int R, int K, int T, int64_t ld,
                    uint32_t* vp) {
    const int64_t up_xi = bf16::packed_a_pairs(R, K);
    for (int xi = 0; xi < nxi; ++xi) {
        const float* v = V + xi * K * ld;
        float* m = M + xi * R * ld;
        if (w.Up) {
            bf16::pack_b_all(K, T, v, ld, 1, vp);
            bf16::gemm_packed(R, T, K, w.Up + xi * up_xi, vp, m, ld, false);
        } else {
            sgemm(false, false, R, T, K, w.U + xi * static_cast<int64_t>(R) * K, K, v, static_cast<int>(ld), 0.0f, m,
                  static_cast<int>(ld), nullptr, false);
        }
    }
}

// Images [n0, n0 + G) into out blocks (G, Cout, chan): in planes (g, c) at
// in + g * in_img + c * in_chan. Returns false on a non-finite input.
bool run_group(const Plan& p, const wino::TileKernels& k, const Weights& U, const float* bias, bool relu,
               const float* in, int64_t in_img, int64_t in_chan, int G, Buffers& b) {
    const bool f4 = p.m == 4;
    const auto input_tiles = f4 ? k.input_tiles4 : k.input_tiles;
    const auto output_tiles = f4 ? k.output_tiles4 : k.output_tiles;
    const auto place_tiles = f4 ? k.place_tiles4 : k.place_tiles;
    for (int th0 = 0; th0 < p.TH; th0 += p.band) {
        const int th1 = std::min(p.TH, th0 + p.band), per_image = (th1 - th0) * p.TW;
        float check = 0.0f;
        for (int g = 0; g < G; ++g)  // images in order: a tile row's spill lands on later tiles
            for (int c = 0; c < p.Cin; ++c)
                check += input_tiles(in + g * in_img + c * in_chan, p.H, p.W, p.PH, p.PW, th0, th1, p.TW, p.TWv,
                                       b.v + c * p.ld + g * per_image, p.Cin * p.ld, b.work);
        if (check != 0.0f) return false;
        multiply_tiles(p.nxi, U, b.v, b.m, p.Cout, p.Cin, G * per_image, p.ld, b.vp);
        for (int o = 0; o < p.Cout; ++o) {  // yt (m*m, ld): the band's outputs tile by tile, then in place
            output_tiles(b.m + o * p.ld, p.Cout * p.ld, G * per_image, bias ? bias[o] : 0.0f, relu,
                           b.yt, p.ld);
            for (int g = 0; g < G; ++g)
                place_tiles(b.yt, p.ld, g * per_image, th1 - th0, p.TW, p.TWv,
                            b.blocks + g * p.block() + o * p.chan() + p.m * th0 * p.OWb, p.OWb);
        }
    }
    return true;
}

// Image n's computed block (Cout, chan) into out (N, Cout, OH, OW)
void copy_block(const Plan& p, const float* block, float* out, int n) {
    float* dst = out + static_cast<int64_t>(n) * p.Cout * p.OH * p.OW;
    for (int o = 0; o < p.Cout; ++o)
        for (int h = 0; h < p.OH; ++h)
            std::memcpy(dst + (static_cast<int64_t>(o) * p.OH + h) * p.OW,
                        block + o * p.chan() + static_cast<int64_t>(h) * p.OWb, sizeof(float) * p.OW);
}

// Where a group's input planes come from: an array (N, Cin, H, W), or a gradient source that
// builds the group's planes as (Cin, G*H*W)
struct Input {
    const float* x;
    const ConvGradSource* source;
};

// Runs the plan over all images; each image's block goes to sink, or is copied into out.
// Returns false (having stopped early) on a non-finite input or weight.
bool run(const Plan& p, const Weights& U, const float* bias, bool relu, Input in, float* out,
         const ConvOutputSink* sink) {
    gemm_variant();  // a bad DEEPKERN_GEMM (and below DEEPKERN_SIMD) throws here, not inside the parallel region
    const wino::TileKernels& k = tiles();
    const int64_t plane = static_cast<int64_t>(p.H) * p.W;
    const int groups = p.groups;
    std::atomic<bool> bad{false};
    auto group = [&](int gi, Buffers& b) {
        if (bad.load(std::memory_order_relaxed)) return;
        const int n0 = p.group_start(gi), G = p.group_start(gi + 1) - n0;
        const float* src = in.x ? in.x + static_cast<int64_t>(n0) * p.Cin * plane : b.gy;
        int64_t in_img = p.Cin * plane, in_chan = plane;
        if (in.source) {  // (Cin, G*H*W): plane (g, c) at c * G*H*W + g * H*W
            in.source->images(n0, G, b.gy, G * plane);
            in_img = plane;
            in_chan = G * plane;
        }
        if (!run_group(p, k, U, bias, relu, src, in_img, in_chan, G, b)) {
            bad.store(true, std::memory_order_relaxed);
            return;
        }
        for (int g = 0; g < G; ++g) {
            const float* block = b.blocks + g * p.block();
            if (sink)
                sink->image(n0 + g, block, p.chan(), p.OWb);
            else
                copy_block(p, block, out, n0 + g);
        }
    };
    const int64_t gy_floats = in.source ? p.Cin * p.G * plane : 0;
    if (can_parallel() && groups >= max_threads()) {
        parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
            Buffers b(p, gy_floats, U.Up != nullptr);
            for (int64_t gi = g0; gi < g1; ++gi) group(static_cast<int>(gi), b);
        });
    } else {
        Buffers b(p, gy_floats, U.Up != nullptr);
        for (int gi = 0; gi < groups; ++gi) group(gi, b);
    }
    return !bad.load();
}

}  // namespace

bool winograd_forward_wanted(const Conv2dShape& s, bool bf16) {
    return winograd_wanted(s, s.C, s.OC, int64_t{s.OH} * s.OW, 0, bf16) != 0;
}

bool winograd_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                      const ConvOutputSink* sink, bool bf16) {
    const int tile = winograd_wanted(s, s.C, s.OC, int64_t{s.OH} * s.OW, 0, bf16);
    if (tile == 0) return false;
    // a 2x2 pool with floor reads only the even part: the last odd row/column is not computed
    const bool even = sink && sink->reads_even_part();
    const int ohc = even ? s.OH / 2 * 2 : s.OH, owc = even ? s.OW / 2 * 2 : s.OW;
    if (ohc == 0 || owc == 0) return false;
    const Plan p(s.N, s.C, s.H, s.W, s.PH, s.PW, s.OC, s.OH, s.OW, ohc, owc, tile);
    std::unique_ptr<float[]> U(new float[p.nxi * static_cast<int64_t>(s.OC) * s.C]);
    if (!transform_weights(w, s.OC, s.C, false, tile, U.get())) return false;
    std::unique_ptr<uint32_t[]> Up;
    return run(p, pack_weights(U.get(), p.nxi, s.OC, s.C, bf16, Up), bias, relu, Input{x, nullptr}, y, sink);
}

namespace {
// The input gradient's tile size (0: not Winograd) under the mode and auto's rule
int input_grad_tile(const Conv2dShape& s, bool bf16) {
    return winograd_wanted(s, s.OC, s.C, int64_t{s.H} * s.W, 16 * 16, bf16);
}
}  // namespace

bool winograd_input_grad_wanted(const Conv2dShape& s, bool bf16) { return input_grad_tile(s, bf16) != 0; }

bool winograd_input_grad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* w,
                         float* gx, bool bf16) {
    const int tile = input_grad_tile(s, bf16);
    if (tile == 0) return false;
    // gx (C, H, W) = full correlation of gy (OC, OH, OW), padded by 2 - P, with the turned weights
    const Plan p(s.N, s.OC, s.OH, s.OW, 2 - s.PH, 2 - s.PW, s.C, s.H, s.W, s.H, s.W, tile);
    std::unique_ptr<float[]> U(new float[p.nxi * static_cast<int64_t>(s.OC) * s.C]);
    if (!transform_weights(w, s.OC, s.C, true, tile, U.get())) return false;
    std::unique_ptr<uint32_t[]> Up;
    return run(p, pack_weights(U.get(), p.nxi, s.C, s.OC, bf16, Up), nullptr, false, Input{gy, gy ? nullptr : source},
               gx, nullptr);
}

}  // namespace deepkern::cpu
