// cross_entropy: one pass per row computes max, log-sum-exp and the picked logit.
#include "cpu/loss.hpp"

#include <algorithm>
#include <cmath>

#include "common/parallel.hpp"

namespace deepkern::cpu {
namespace {

// log(sum(exp(row))) of one row of C logits, stable
inline double row_logsumexp(const float* row, int C) {
    float mx = row[0];
    for (int j = 1; j < C; ++j) mx = std::max(mx, row[j]);
    double sum = 0.0;
    for (int j = 0; j < C; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
    return std::log(sum) + mx;
}

}  // namespace

// logits (N, C), labels (N,)
float cross_entropy_forward(const float* logits, const int64_t* labels, int N, int C) {
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (worth_parallel(static_cast<int64_t>(N) * C))
    for (int i = 0; i < N; ++i) {
        const float* row = logits + static_cast<int64_t>(i) * C;
        total += row_logsumexp(row, C) - row[labels[i]];
    }
    return static_cast<float>(total / N);
}

// glogits (N, C) = grad * (softmax - onehot) / N
void cross_entropy_backward(const float* logits, const int64_t* labels, float* glogits, int N, int C, float grad) {
    const double scale = static_cast<double>(grad) / N;
#pragma omp parallel for schedule(static) if (worth_parallel(static_cast<int64_t>(N) * C))
    for (int i = 0; i < N; ++i) {
        const float* row = logits + static_cast<int64_t>(i) * C;
        float* g = glogits + static_cast<int64_t>(i) * C;
        const double lse = row_logsumexp(row, C);
        for (int j = 0; j < C; ++j) g[j] = static_cast<float>(std::exp(row[j] - lse) * scale);
        g[labels[i]] -= static_cast<float>(scale);
    }
}

}  // namespace deepkern::cpu
