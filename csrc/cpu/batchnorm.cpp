// Batch normalisation: thread split and instruction-set dispatch. The single-thread loops live
// in batchnorm_runs.hpp, compiled three times (generic here, batchnorm_avx2.cpp,
// batchnorm_avx512.cpp). Per-channel sums run in one pass over memory with double accumulators;
// the work is split into a fixed number of (batch piece, channel block) units that depends only
// on the shape, and the pieces' partial sums are added in piece order, so the result has the
// same bits for any thread count. The elementwise passes (normalise+affine, input gradient) are
// one multiply-add chain per element.
#include "cpu/batchnorm.hpp"

#include <math.h>

#include <vector>

#include "common/batchnorm_math.hpp"
#include "common/parallel.hpp"
#include "cpu/batchnorm_runs.hpp"
#include "cpu/simd_variant.hpp"

namespace deepkern::cpu {

namespace bn {
const Kernels& generic_kernels() {
    static const Kernels k = make_kernels();
    return k;
}
}  // namespace bn

namespace {

constexpr int64_t kUnits = 64;        // at most this many (piece, channel block) units per reduction
constexpr int64_t kUnitWork = 1 << 14; // and at least this many values in each (fewer partial sums)
constexpr int64_t kRowBlock = 256;    // channels per block when S == 1 (rows of C contiguous values)

const bn::Kernels& K() {
    switch (simd_isa()) {
        case SimdIsa::avx512: return bn::avx512_kernels();
        case SimdIsa::avx2: return bn::avx2_kernels();
        default: return bn::generic_kernels();
    }
}

// Per-channel double sums A[c], B[c] over x (N, C, S). run(c, offset, len, a, b) adds a run of
// `len` contiguous values of channel c starting at element `offset`; rows(offset, count, c0, c1,
// a, b) adds `count` rows (S == 1) from element `offset` for channels [c0, c1) into a, b.
template <class Run, class Row>
void channel_sums(int64_t N, int64_t C, int64_t S, Run run, Row row, double* A, double* B) {
    const int64_t blocks = S == 1 ? (C + kRowBlock - 1) / kRowBlock : C;
    int64_t pieces = kUnits / blocks, by_work = N * C * S / (blocks * kUnitWork);
    pieces = by_work < pieces ? by_work : pieces;
    pieces = pieces < 1 ? 1 : (pieces > N ? N : pieces);
    // partial (pieces, 2, C): each unit owns its slots, so no two threads write one
    std::vector<double> part(static_cast<size_t>(pieces * 2 * C), 0.0);
    parallel_ranges(pieces * blocks, N * C * S, 1, [&](int64_t begin, int64_t end) {
        for (int64_t u = begin; u < end; ++u) {
            const int64_t p = u / blocks, blk = u % blocks;
            const int64_t n0 = N * p / pieces, n1 = N * (p + 1) / pieces;
            double* pa = part.data() + p * 2 * C;
            double* pb = pa + C;
            if (S == 1) {
                const int64_t c0 = blk * kRowBlock, c1 = c0 + kRowBlock < C ? c0 + kRowBlock : C;
                row(n0 * C, n1 - n0, c0, c1, pa, pb);
            } else {
                for (int64_t n = n0; n < n1; ++n) run(blk, (n * C + blk) * S, S, pa + blk, pb + blk);
            }
        }
    });
    for (int64_t c = 0; c < C; ++c) {
        double a = 0.0, b = 0.0;
        for (int64_t p = 0; p < pieces; ++p) {
            a += part[static_cast<size_t>(p * 2 * C + c)];
            b += part[static_cast<size_t>(p * 2 * C + C + c)];
        }
        A[c] = a;
        B[c] = b;
    }
}

// out[n, c, s] = (in[n, c, s] - center[c]) * scale[c] + shift[c], plus add[n, c, s] * mult[c]
// when `add` is given (the input gradient uses both terms). in, add, out are (N, C, S).
void channel_affine(const float* in, const float* center, const float* scale, const float* shift,
                    const float* add, const float* mult, float* out, int64_t N, int64_t C, int64_t S) {
    const bn::Kernels& k = K();
    if (S == 1) {  // rows of C: vectorised across channels
        parallel_ranges(N, N * C, 1, [&](int64_t begin, int64_t end) {
            for (int64_t n = begin; n < end; ++n)
                k.affine_row(in + n * C, center, scale, shift, add ? add + n * C : nullptr, mult, out + n * C, C);
        });
        return;
    }
    parallel_ranges(N * C, N * C * S, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
            const int64_t c = r % C;
            k.affine_run(in + r * S, S, center[c], scale[c], shift[c], add ? add + r * S : nullptr,
                         mult ? mult[c] : 0.0f, out + r * S);
        }
    });
}

// y = (x - mean) * invstd * weight + bias, with mean/invstd (C,) already set
void normalise(const float* x, const float* weight, const float* bias, const float* mean, const float* invstd,
               float* y, int64_t N, int64_t C, int64_t S) {
    std::vector<float> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
        scale[c] = weight ? invstd[c] * weight[c] : invstd[c];
        shift[c] = bias ? bias[c] : 0.0f;
    }
    channel_affine(x, mean, scale.data(), shift.data(), nullptr, nullptr, y, N, C, S);
}

}  // namespace

void batch_norm_forward_train(const float* x, const float* weight, const float* bias, float* running_mean,
                              float* running_var, float* y, float* mean, float* invstd, int64_t N, int64_t C,
                              int64_t S, float momentum, float eps, bool unbiased) {
    // Sums of d = x - k with k = the channel's first value: the shift keeps sum(d^2) - sum(d)^2/M
    // from cancelling when the mean is large against the spread.
    std::vector<double> shift(static_cast<size_t>(C)), A(static_cast<size_t>(C)), B(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) shift[c] = x[c * S];
    const double* k = shift.data();
    const bn::Kernels& kern = K();
    channel_sums(
        N, C, S,
        [&](int64_t c, int64_t off, int64_t len, double* a, double* b) { kern.stats_run(x + off, len, k[c], a, b); },
        [&](int64_t off, int64_t rows, int64_t c0, int64_t c1, double* a, double* b) {
            kern.stats_rows(x + off, C, rows, k, c0, c1, a, b);
        },
        A.data(), B.data());
    const double M = static_cast<double>(N) * static_cast<double>(S);
    for (int64_t c = 0; c < C; ++c)
        channel_stats(A[c], B[c], k[c], M, momentum, eps, unbiased, mean + c, invstd + c,
                      running_mean ? running_mean + c : nullptr, running_var ? running_var + c : nullptr);
    normalise(x, weight, bias, mean, invstd, y, N, C, S);
}

void batch_norm_forward_eval(const float* x, const float* weight, const float* bias, const float* running_mean,
                             const float* running_var, float* y, float* mean, float* invstd, int64_t N,
                             int64_t C, int64_t S, float eps) {
    for (int64_t c = 0; c < C; ++c) {
        mean[c] = running_mean[c];
        invstd[c] = static_cast<float>(1.0 / sqrt(static_cast<double>(running_var[c]) + eps));
    }
    normalise(x, weight, bias, mean, invstd, y, N, C, S);
}

void batch_norm_backward(const float* g, const float* x, const float* weight, const float* mean,
                         const float* invstd, float* gx, float* gw, float* gb, int64_t N, int64_t C, int64_t S,
                         bool training) {
    std::vector<double> A(static_cast<size_t>(C)), B(static_cast<size_t>(C));
    if (training || gw || gb) {
        // A = sum g, B = sum g * (x - mean); the weight gradient is B * invstd
        const bn::Kernels& kern = K();
        channel_sums(
            N, C, S,
            [&](int64_t c, int64_t off, int64_t len, double* a, double* b) {
                kern.grad_run(g + off, x + off, len, mean[c], a, b);
            },
            [&](int64_t off, int64_t rows, int64_t c0, int64_t c1, double* a, double* b) {
                kern.grad_rows(g + off, x + off, C, rows, mean, c0, c1, a, b);
            },
            A.data(), B.data());
    }
    const double M = static_cast<double>(N) * static_cast<double>(S);
    // gx = (x - mean) * c1 + c0 + g * k per channel
    std::vector<float> c1(static_cast<size_t>(C)), c0(static_cast<size_t>(C)), kk(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c)
        channel_grad_coefficients(A[c], B[c], invstd[c], weight ? weight[c] : 1.0, M, training, &kk[c], &c1[c],
                                  &c0[c], gw ? gw + c : nullptr, gb ? gb + c : nullptr);
    if (training) {
        channel_affine(x, mean, c1.data(), c0.data(), g, kk.data(), gx, N, C, S);
    } else {  // gx = g * k: x is not read, so a NaN in x does not reach gx (as in PyTorch)
        const std::vector<float> zero(static_cast<size_t>(C), 0.0f);
        channel_affine(g, zero.data(), kk.data(), zero.data(), nullptr, nullptr, gx, N, C, S);
    }
}

}  // namespace deepkern::cpu
