// cross_entropy: one pass per row computes max, log-sum-exp and the picked logit.
// The seed batches are tiny (128 x 10: ~1,300 exps), so below the parallel grain the loops
// run on the calling thread with no OpenMP region at all, and exp is the vectorisable
// fast_exp (~2 ulp) rather than double-precision std::exp.
#include "cpu/loss.hpp"

#include <math.h>

#include "common/parallel.hpp"
#include "cpu/fast_exp.hpp"

namespace deepkern::cpu {
namespace {

// log(sum(exp(row))) of one row of C logits, shifted by the row maximum so exp never overflows
inline float row_logsumexp(const float* row, int C) {
    float mx = row[0];
    for (int j = 1; j < C; ++j) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < C; ++j) sum += fast_exp(row[j] - mx);
    return mx + logf(sum);
}

}  // namespace

// logits (N, C), labels (N,); the per-row losses are summed in double
float cross_entropy_forward(const float* logits, const int64_t* labels, int N, int C) {
    double total = 0.0;
    const int64_t work = static_cast<int64_t>(N) * C;
    if (!worth_parallel(work)) {
        for (int i = 0; i < N; ++i) {
            const float* row = logits + static_cast<int64_t>(i) * C;
            total += static_cast<double>(row_logsumexp(row, C)) - row[labels[i]];
        }
        return static_cast<float>(total / N);
    }
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int i = 0; i < N; ++i) {
        const float* row = logits + static_cast<int64_t>(i) * C;
        total += static_cast<double>(row_logsumexp(row, C)) - row[labels[i]];
    }
    return static_cast<float>(total / N);
}

// glogits (N, C) = grad * (softmax - onehot) / N
void cross_entropy_backward(const float* logits, const int64_t* labels, float* glogits, int N, int C, float grad) {
    const float scale = static_cast<float>(static_cast<double>(grad) / N);
    parallel_ranges(N, static_cast<int64_t>(N) * C, 1, [=](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            const float* row = logits + i * C;
            float* g = glogits + i * C;
            const float lse = row_logsumexp(row, C);
#pragma omp simd
            for (int j = 0; j < C; ++j) g[j] = fast_exp(row[j] - lse) * scale;
            g[labels[i]] -= scale;
        }
    });
}

}  // namespace deepkern::cpu
