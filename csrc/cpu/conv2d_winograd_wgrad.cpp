// The Winograd F(3x3, 2x2) weight gradient (conv2d_winograd_wgrad.hpp).
//
// Work: every image's tiles are cut into bands of whole tile rows ("units", so that a band's
// transformed data fits the buffer); a buffer collects the U and V planes of consecutive units,
// channels last, and is flushed by 16 GEMMs (one per transform point) accumulating into a partial M:
//   u (16, Tcap, OC), v (16, Tcap, C):  M_xi (OC, C) += u_xi^T (OC, T) @ v_xi (T, C)
// (or its transpose M_xi^T (C, OC), whichever fills the GEMM's register tile better). The buffer
// is sized to stay in L2 between the transforms that write it and the GEMMs that read it.
// Threads: the units are split into a fixed number of chunks that depends on the shape only; each
// chunk accumulates its own partial M and gb, added in chunk order, so the result is the same
// for any thread count (as the direct path's). Then gw = Gt M G per (o, c) and a check that
// everything stayed finite (else the caller falls back to the direct path).
#include "cpu/conv2d_winograd_wgrad.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/parallel.hpp"
#include "cpu/conv2d_winograd.hpp"  // winograd_mode
#include "cpu/conv2d_winograd_wgrad_tiles.hpp"
#include "cpu/gemm_bf16.hpp"
#include "cpu/matmul.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {
namespace wgrad {
const TileKernels& generic_tiles() { return kTileKernels; }
}  // namespace wgrad

namespace {

// 3x3, stride 1, padding <= 2 (a wider padding would give tiles made of padding only), and a
// non-empty problem (the direct path handles the empty ones)
bool geometry_allows(const Conv2dShape& s) {
    return s.KH == 3 && s.KW == 3 && s.SH == 1 && s.SW == 1 && s.PH <= 2 && s.PW <= 2 && s.N > 0 && s.C > 0 &&
           s.OC > 0 && s.OH > 0 && s.OW > 0;
}

// Where the Winograd weight gradient measured faster than the direct GEMM (benchmarks/RESULTS.md,
// "Winograd weight gradient"; 1 thread, N x C x H x W -> OC, direct / Winograd time):
//  - at least 8 input channels: the transforms vectorise over channels and the GEMMs have N = C
//    columns. 128x8x28x28 -> 16: 1.62x, -> 4: 2.54x; but 128x4x28x28 -> 32: 0.85x, 32x3x150x150
//    -> 32: 0.95x, 128x1x28x28 -> 32 (seed conv1): 0.41x.
//  - the tiles save at least 1.5x of the multiplies: 9 * OH * OW direct against 16 per 2x2 tile,
//    which the zero-extension of odd sizes eats into. 5x5 outputs (1.56x fewer): 1.36x faster;
//    3x3 outputs (1.27x fewer): 1.03x; 11x11 (seed conv2, 1.89x fewer): 1.26-1.35x.
bool measured_faster(const Conv2dShape& s) {
    const int64_t direct = 9 * static_cast<int64_t>(s.OH) * s.OW;
    const int64_t tiles = static_cast<int64_t>((s.OH + 1) / 2) * ((s.OW + 1) / 2);
    return s.C >= 8 && 2 * direct >= 3 * 16 * tiles;
}

const wgrad::TileKernels& tile_kernels() {
    switch (simd_isa()) {
        case SimdIsa::avx512: return wgrad::avx512_tiles();
        case SimdIsa::avx2: return wgrad::avx2_tiles();
        default: return wgrad::generic_tiles();
    }
}

// Fraction of the AVX-512 GEMM's 14 x 32 register tiles that an (m, n) product fills
double tile_fill(int m, int n) {
    const double rows = static_cast<double>(m) / (((m + 13) / 14) * 14);
    const double cols = static_cast<double>(n) / (((n + 31) / 32) * 32);
    return rows * cols;
}

// U + V buffer of one chunk, about the 1 MiB L2: what the transforms write is mostly still there
// when the GEMMs read it, and each GEMM gets a long reduction. (1 thread, CPU time, medians: seed
// conv2 / 32x64x17x17 -> 64 took 5.44 / 6.23 ms with 256 KiB, 6.18 / 5.39 with 512 KiB, 5.30 / 4.67
// with 1 MiB, 5.49 / 4.85 with 2 MiB.)
constexpr int64_t kBufferBytes = 1024 * 1024;
constexpr int kMostChunks = 16;                       // 8 per thread on 2 cores
constexpr int64_t kPartialFloats = int64_t{1} << 22;  // 16 MiB for the partial sums

struct Plan {
    int TH, TW;       // tile rows and columns per image
    int band;         // tile rows per unit
    int bands;        // units per image
    int tcap;         // tiles the buffer holds
    int64_t units;    // N * bands
    int chunks;
    bool oc_rows;     // M_xi stored (OC, C); else (C, OC)
    int64_t m_size;   // 16 * OC * C
};

Plan make_plan(const Conv2dShape& s) {
    Plan p{};
    p.TH = (s.OH + 1) / 2;
    p.TW = (s.OW + 1) / 2;
    const int64_t per_tile = 16 * static_cast<int64_t>(s.C + s.OC) * sizeof(float);
    const int64_t fit = std::max<int64_t>(p.TW, kBufferBytes / per_tile);  // at least one tile row
    p.band = static_cast<int>(std::min<int64_t>(p.TH, fit / p.TW));
    p.bands = (p.TH + p.band - 1) / p.band;
    // whole images (one band each) share the buffer: as many as fit
    p.tcap = static_cast<int>(p.bands == 1 ? std::max<int64_t>(fit / (int64_t{p.TH} * p.TW), 1) * p.TH * p.TW
                                           : int64_t{p.band} * p.TW);
    p.units = static_cast<int64_t>(s.N) * p.bands;
    p.m_size = 16 * static_cast<int64_t>(s.OC) * s.C;
    p.chunks = static_cast<int>(
        std::clamp<int64_t>(kPartialFloats / (p.m_size + s.OC), 1, std::min<int64_t>(p.units, kMostChunks)));
    p.oc_rows = tile_fill(s.OC, s.C) >= tile_fill(s.C, s.OC);
    return p;
}

std::unique_ptr<float[]> scratch(size_t n) { return std::unique_ptr<float[]>(new float[n]); }

// sums (n,) += the rows of rows (m, n) in order: the bias gradient from a unit's channels-last
// gradient (its rows cover each image's pixels once; the zero padding adds nothing)
void add_rows(const float* rows, int64_t m, int n, float* sums) {
    for (int64_t i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) sums[j] += rows[i * n + j];
}

// One chunk: units [u_lo, u_hi) accumulated into m (16 planes of M) and gb_part (OC,) if wanted.
void run_chunk(const Conv2dShape& s, const Plan& p, const float* gy, const ConvGradSource* source,
               const float* x, int64_t u_lo, int64_t u_hi, float* m, float* gb_part, bool bf16) {
    const wgrad::TileKernels& k = tile_kernels();
    const int64_t ohw = static_cast<int64_t>(s.OH) * s.OW, hw = static_cast<int64_t>(s.H) * s.W;
    const int64_t us = static_cast<int64_t>(s.OC) * p.tcap, vs = static_cast<int64_t>(s.C) * p.tcap;
    auto u = scratch(16 * us), v = scratch(16 * vs);
    auto xt = scratch(static_cast<size_t>(2 * p.band + 2) * (2 * p.TW + 2) * s.C);  // a unit's input rows
    auto gt = scratch(static_cast<size_t>(2 * p.band) * 2 * p.TW * s.OC);           // its gradient rows
    auto gy_image = scratch(source ? static_cast<size_t>(s.OC * ohw) : 0);
    const int mm = p.oc_rows ? s.OC : s.C, mn = p.oc_rows ? s.C : s.OC;  // bf16: packing buffers of a product
    std::unique_ptr<uint32_t[]> ap(new uint32_t[bf16 ? bf16::packed_a_pairs(mm, p.tcap) : 0]);
    std::unique_ptr<uint32_t[]> bp(new uint32_t[bf16 ? bf16::packed_b_pairs(p.tcap, mn) : 0]);
    if (gb_part) std::fill(gb_part, gb_part + s.OC, 0.0f);

    int filled = 0;      // tiles in the buffer
    bool first = true;   // the first flush overwrites m
    auto flush = [&]() {
        if (filled == 0) return;
        // M_xi (OC, C) (+)= u_xi^T (OC, T) @ v_xi (T, C), or M_xi^T (C, OC) (+)= v_xi^T (C, T) @ u_xi (T, OC);
        // both operands are read where the transforms left them (in L2: packing would copy them again)
        GemmArgs a;
        a.trans_a = true;
        a.a_in_place = true;
        a.M = p.oc_rows ? s.OC : s.C;
        a.N = p.oc_rows ? s.C : s.OC;
        a.K = filled;
        a.lda = a.M;
        a.ldb = a.N;
        a.ldc = a.N;
        a.beta = first ? 0.0f : 1.0f;
        for (int xi = 0; xi < 16; ++xi) {
            const float* ux = u.get() + xi * us;
            const float* vx = v.get() + xi * vs;
            a.A = p.oc_rows ? ux : vx;
            a.B = p.oc_rows ? vx : ux;
            a.C = m + xi * static_cast<int64_t>(s.OC) * s.C;
            if (bf16)
                gemm_bf16_buffered(a.M, a.N, a.K, a.A, 1, a.M, a.B, a.N, 1, a.C, a.ldc, !first, ap.get(), bp.get());
            else
                sgemm(a);
        }
        filled = 0;
        first = false;
    };
    int64_t image = -1;
    const float* g = nullptr;  // image `image`'s gradient (OC, OH, OW)
    for (int64_t unit = u_lo; unit < u_hi; ++unit) {
        const int64_t n = unit / p.bands;
        const int ty0 = static_cast<int>(unit % p.bands) * p.band, ty1 = std::min(p.TH, ty0 + p.band);
        const int tiles = (ty1 - ty0) * p.TW;
        if (filled + tiles > p.tcap) flush();
        if (n != image) {
            image = n;
            if (source) {
                source->images(static_cast<int>(n), 1, gy_image.get(), ohw);
                g = gy_image.get();
            } else {
                g = gy + n * s.OC * ohw;
            }
        }
        const int bt = ty1 - ty0;
        k.input_rows(x + n * s.C * hw, s.C, s.H, s.W, s.PH, s.PW, 2 * ty0, 2 * bt + 2, 2 * p.TW + 2, xt.get());
        k.input(xt.get(), s.C, p.TW, bt, v.get() + static_cast<int64_t>(filled) * s.C, vs);
        k.grad_rows(g, s.OC, s.OH, s.OW, 2 * ty0, 2 * bt, p.TW, gt.get());
        if (gb_part) add_rows(gt.get(), static_cast<int64_t>(2 * bt) * 2 * p.TW, s.OC, gb_part);
        k.grad(gt.get(), s.OC, p.TW, bt, u.get() + static_cast<int64_t>(filled) * s.OC, us);
        filled += tiles;
    }
    flush();
}

// gw[o, c] (3x3) = Gt M[o, c] G for o in [o_lo, o_hi), M the 16 planes of m; false if an M entry or
// a result is not finite
bool output_transform(const Conv2dShape& s, const Plan& p, const float* m, float* gw, int o_lo, int o_hi) {
    float check = 0.0f;  // stays 0 while every value is finite (inf - inf and NaN - NaN are NaN)
    for (int o = o_lo; o < o_hi; ++o)
        for (int c = 0; c < s.C; ++c) {
            const int64_t at = p.oc_rows ? static_cast<int64_t>(o) * s.C + c : static_cast<int64_t>(c) * s.OC + o;
            float mm[16], t[12];
            for (int xi = 0; xi < 16; ++xi) {
                mm[xi] = m[xi * static_cast<int64_t>(s.OC) * s.C + at];
                check += mm[xi] - mm[xi];
            }
            // t (3, 4) = Gt @ mm (4, 4)
            for (int b = 0; b < 4; ++b) {
                const float m0 = mm[b], m1 = mm[4 + b], m2 = mm[8 + b], m3 = mm[12 + b];
                t[b] = m0 + 0.5f * (m1 + m2);
                t[4 + b] = 0.5f * (m1 - m2);
                t[8 + b] = 0.5f * (m1 + m2) - m3;
            }
            // out (3, 3) = t @ G
            float* out = gw + (static_cast<int64_t>(o) * s.C + c) * 9;
            for (int i = 0; i < 3; ++i) {
                const float t0 = t[4 * i], t1 = t[4 * i + 1], t2 = t[4 * i + 2], t3 = t[4 * i + 3];
                out[3 * i] = t0 + 0.5f * (t1 + t2);
                out[3 * i + 1] = 0.5f * (t1 - t2);
                out[3 * i + 2] = 0.5f * (t1 + t2) - t3;
                for (int j = 0; j < 3; ++j) check += out[3 * i + j] - out[3 * i + j];
            }
        }
    return check == 0.0f;
}

}  // namespace

bool winograd_wgrad_applies(const Conv2dShape& s) {
    const WinogradMode mode = winograd_mode();
    if (mode == WinogradMode::off || !geometry_allows(s)) return false;
    // on, f2, f4: wherever the geometry allows (the weight gradient has one tile size)
    return mode != WinogradMode::automatic || measured_faster(s);
}

bool conv2d_winograd_wgrad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* x,
                           float* gw, float* gb, bool bf16) {
    const Plan p = make_plan(s);
    gemm_variant();  // surfaces a bad DEEPKERN_GEMM here, not from inside the parallel region
    auto partial_m = scratch(static_cast<size_t>(p.chunks * p.m_size));  // each chunk overwrites its own
    auto partial_b = scratch(gb ? static_cast<size_t>(p.chunks) * s.OC : 0);
    parallel_chunks(p.chunks, [&](int64_t k) {
        const int64_t lo = p.units * k / p.chunks, hi = p.units * (k + 1) / p.chunks;
        run_chunk(s, p, gy, source, x, lo, hi, partial_m.get() + k * p.m_size,
                  gb ? partial_b.get() + k * s.OC : nullptr, bf16);
    });
    conv2d_parts::sum_partials(partial_m.get(), p.chunks, p.m_size);
    std::vector<unsigned char> finite(static_cast<size_t>(s.OC), 1);
    parallel_ranges(s.OC, p.m_size, 1, [&](int64_t o0, int64_t o1) {
        if (!output_transform(s, p, partial_m.get(), gw, static_cast<int>(o0), static_cast<int>(o1)))
            finite[o0] = 0;
    });
    if (gb)
        for (int o = 0; o < s.OC; ++o) {
            float total = partial_b[o];
            for (int k = 1; k < p.chunks; ++k) total += partial_b[static_cast<size_t>(k) * s.OC + o];
            gb[o] = total;
        }
    return std::all_of(finite.begin(), finite.end(), [](unsigned char f) { return f != 0; });
}

}  // namespace deepkern::cpu
