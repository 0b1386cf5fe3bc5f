// cross_entropy: log-softmax + NLL fused, mean over the batch.
// The seed batches are tiny (128 x 10), so the work is organised for short rows: blocks of
// rows are shifted by their maxima into a scratch (or the output), then one flat vectorised
// fast_exp (< 1 ulp) runs over the whole block instead of ten-element loops per row. Below
// the parallel grain everything stays on the calling thread, with no worker woken at all.
#include "cpu/loss.hpp"

#include <math.h>

#include <algorithm>
#include <vector>

#include "common/parallel.hpp"
#include "cpu/fast_exp.hpp"

// see fast_exp.hpp: lets the clamps in the inlined exp vectorise below AVX-512
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

namespace deepkern::cpu {
namespace {

constexpr int64_t kBlockFloats = 4096;  // scratch per block: 16 KB, L1-resident

int64_t block_rows(int C) { return C >= kBlockFloats ? 1 : kBlockFloats / C; }  // C >= 1

// e (rows, C) = exp(x - rowmax(x)); returns nothing, fills rowmax (rows,)
void shifted_exp(const float* __restrict x, float* __restrict e, float* __restrict rowmax, int64_t rows, int C) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * C;
        float mx = xr[0];
        for (int j = 1; j < C; ++j) mx = xr[j] > mx ? xr[j] : mx;
        rowmax[r] = mx;
        float* er = e + r * C;
        for (int j = 0; j < C; ++j) er[j] = xr[j] - mx;
    }
    const int64_t n = rows * C;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) e[i] = fast_exp(e[i]);
}

inline float row_sum(const float* e, int C) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < C; ++j) s += e[j];
    return s;
}

// Sum over rows [begin, end) of logsumexp(row) - row[label], in double. Written as
// (rowmax - row[label]) + log(sum): rowmax + log(sum) first would round away log(sum) for
// large logits (1e8 + 0.69 is 1e8 in float32).
double loss_sum(const float* logits, const int64_t* labels, int64_t begin, int64_t end, int C) {
    const int64_t B = block_rows(C);
    std::vector<float> scratch(static_cast<size_t>(B * C)), rowmax(static_cast<size_t>(B));
    double total = 0.0;
    for (int64_t r0 = begin; r0 < end; r0 += B) {
        const int64_t rows = end - r0 < B ? end - r0 : B;
        const float* x = logits + r0 * C;
        shifted_exp(x, scratch.data(), rowmax.data(), rows, C);
        for (int64_t r = 0; r < rows; ++r) {
            const double gap = static_cast<double>(rowmax[r]) - x[r * C + labels[r0 + r]];
            total += gap + log(static_cast<double>(row_sum(scratch.data() + r * C, C)));
        }
    }
    return total;
}

// g rows [begin, end) = scale * (softmax(row) - onehot(label)); g doubles as the scratch
void grad_rows(const float* logits, const int64_t* labels, float* g, int64_t begin, int64_t end, int C, float scale) {
    const int64_t B = block_rows(C);
    std::vector<float> rowmax(static_cast<size_t>(B));
    for (int64_t r0 = begin; r0 < end; r0 += B) {
        const int64_t rows = end - r0 < B ? end - r0 : B;
        float* gb = g + r0 * C;
        shifted_exp(logits + r0 * C, gb, rowmax.data(), rows, C);
        for (int64_t r = 0; r < rows; ++r) {
            float* gr = gb + r * C;
            const float k = scale / row_sum(gr, C);
#pragma omp simd
            for (int j = 0; j < C; ++j) gr[j] *= k;
            gr[labels[r0 + r]] -= scale;
        }
    }
}

}  // namespace

// logits (N, C), labels (N,); the per-row losses are summed in double, per chunk of rows, and
// the chunks' sums added in chunk order: chunks of a fixed size (half the parallel grain), so
// the result is the same whatever the thread count.
float cross_entropy_forward(const float* logits, const int64_t* labels, int N, int C) {
    if (N <= 0 || C <= 0) return NAN;  // the mean over nothing (the binding refuses C == 0 with labels)
    const int64_t rows = std::max<int64_t>(1, (kParallelGrain / 2) / std::max(C, 1));
    const int64_t chunks = (N + rows - 1) / rows;
    std::vector<double> part(static_cast<size_t>(chunks));
    parallel_chunks(chunks, [&](int64_t k) {
        part[k] = loss_sum(logits, labels, k * rows, std::min<int64_t>(N, (k + 1) * rows), C);
    });
    double total = 0.0;
    for (double p : part) total += p;
    return static_cast<float>(total / N);
}

// glogits (N, C) = grad * (softmax - onehot) / N
void cross_entropy_backward(const float* logits, const int64_t* labels, float* glogits, int N, int C, float grad) {
    if (N <= 0 || C <= 0) return;  // glogits is empty
    const float scale = static_cast<float>(static_cast<double>(grad) / N);
    parallel_ranges(N, static_cast<int64_t>(N) * C, 1, [=](int64_t begin, int64_t end) {
        grad_rows(logits, labels, glogits, begin, end, C, scale);
    });
}

}  // namespace deepkern::cpu

#pragma GCC pop_options
