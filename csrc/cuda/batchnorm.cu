// Batch normalisation: per-channel double sums in one pass over memory (blocks of (channel,
// batch piece), partials added in piece order by a per-channel finishing kernel: no atomics),
// then one fused elementwise pass (normalise+affine, or the input gradient).
#include "common/batchnorm_math.hpp"
#include "cuda/batchnorm.cuh"
#include "cuda/common.cuh"

namespace deepkern::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTargetBlocks = 512;  // enough (channel, piece) blocks to fill any GPU
constexpr int kRowChannels = 32;    // S == 1: channels per block (one warp wide, coalesced)
constexpr int kRowLanes = 8;        // S == 1: rows read at once per block

int64_t channel_blocks(int64_t C, int64_t S) { return S == 1 ? ceil_div(C, kRowChannels) : C; }

int64_t pieces(int64_t N, int64_t C, int64_t S) {
    int64_t p = kTargetBlocks / channel_blocks(C, S);
    return p < 1 ? 1 : (p > N ? N : p);
}

// a += x - k, b += (x - k)^2 with k = the channel's first value (keeps the variance from cancelling)
struct StatsTerm {
    const float* x;
    int64_t S;
    __device__ double center(int64_t c) const { return x[c * S]; }
    __device__ void operator()(int64_t i, double k, double& a, double& b) const {
        const double d = static_cast<double>(__ldg(x + i)) - k;
        a += d;
        b += d * d;
    }
};

// a += g, b += g * (x - mean)
struct GradTerm {
    const float* g;
    const float* x;
    const float* mean;
    __device__ double center(int64_t c) const { return mean[c]; }
    __device__ void operator()(int64_t i, double m, double& a, double& b) const {
        const double gv = __ldg(g + i);
        a += gv;
        b += gv * (static_cast<double>(__ldg(x + i)) - m);
    }
};

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// S > 1: block (c, p) sums channel c over batch piece p; part is (P, 2, C)
template <class Term>
__global__ void sums_spatial_kernel(Term t, double* __restrict__ part, int64_t N, int64_t C, int64_t S, int P) {
    __shared__ double sh_a[kThreads / 32], sh_b[kThreads / 32];
    const int64_t c = blockIdx.x;
    const int p = blockIdx.y;
    const int64_t n0 = N * p / P, n1 = N * (p + 1) / P, len = (n1 - n0) * S;
    const double k = t.center(c);
    double a = 0.0, b = 0.0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
        const int64_t n = n0 + i / S, s = i % S;
        t((n * C + c) * S + s, k, a, b);
    }
    a = warp_sum_d(a);
    b = warp_sum_d(b);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) {
        sh_a[warp] = a;
        sh_b[warp] = b;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double ta = 0.0, tb = 0.0;
        for (int w = 0; w < kThreads / 32; ++w) {
            ta += sh_a[w];
            tb += sh_b[w];
        }
        part[static_cast<int64_t>(p) * 2 * C + c] = ta;
        part[static_cast<int64_t>(p) * 2 * C + C + c] = tb;
    }
}

// S == 1 (rows of C): block (32 channels, piece p), threads (channel lane, row lane)
template <class Term>
__global__ void sums_rows_kernel(Term t, double* __restrict__ part, int64_t N, int64_t C, int P) {
    __shared__ double sh_a[kRowLanes][kRowChannels + 1], sh_b[kRowLanes][kRowChannels + 1];
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kRowChannels + threadIdx.x;
    const int p = blockIdx.y;
    const int64_t n0 = N * p / P, n1 = N * (p + 1) / P;
    double a = 0.0, b = 0.0;
    if (c < C) {
        const double k = t.center(c);
        for (int64_t n = n0 + threadIdx.y; n < n1; n += kRowLanes) t(n * C + c, k, a, b);
    }
    sh_a[threadIdx.y][threadIdx.x] = a;
    sh_b[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        double ta = 0.0, tb = 0.0;
        for (int r = 0; r < kRowLanes; ++r) {
            ta += sh_a[r][threadIdx.x];
            tb += sh_b[r][threadIdx.x];
        }
        part[static_cast<int64_t>(p) * 2 * C + c] = ta;
        part[static_cast<int64_t>(p) * 2 * C + C + c] = tb;
    }
}

// Fills part (P, 2, C) with the per-piece sums of Term over x (N, C, S)
template <class Term>
void channel_sums(Term t, double* part, int64_t N, int64_t C, int64_t S, cudaStream_t stream) {
    const int P = static_cast<int>(pieces(N, C, S));
    if (S == 1) {
        const dim3 grid(static_cast<unsigned>(channel_blocks(C, S)), static_cast<unsigned>(P));
        sums_rows_kernel<Term><<<grid, dim3(kRowChannels, kRowLanes), 0, stream>>>(t, part, N, C, P);
        CUDA_CHECK_LAUNCH("sums_rows_kernel");
    } else {
        const dim3 grid(static_cast<unsigned>(C), static_cast<unsigned>(P));
        sums_spatial_kernel<Term><<<grid, kThreads, 0, stream>>>(t, part, N, C, S, P);
        CUDA_CHECK_LAUNCH("sums_spatial_kernel");
    }
}

// Adds channel c's partials in piece order
__device__ __forceinline__ void total(const double* part, int64_t C, int P, int64_t c, double& a, double& b) {
    a = 0.0;
    b = 0.0;
    for (int p = 0; p < P; ++p) {
        a += part[static_cast<int64_t>(p) * 2 * C + c];
        b += part[static_cast<int64_t>(p) * 2 * C + C + c];
    }
}

// One thread per channel: mean, invstd and the running statistics from the sums
__global__ void stats_finish_kernel(const double* __restrict__ part, const float* __restrict__ x,
                                    float* running_mean, float* running_var, float* __restrict__ mean,
                                    float* __restrict__ invstd, int64_t N, int64_t C, int64_t S, int P,
                                    float momentum, float eps, bool unbiased) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double a, b;
    total(part, C, P, c, a, b);
    const double M = static_cast<double>(N) * static_cast<double>(S);
    channel_stats(a, b, x[c * S], M, momentum, eps, unbiased, mean + c, invstd + c,
                  running_mean ? running_mean + c : nullptr, running_var ? running_var + c : nullptr);
}

__global__ void eval_stats_kernel(const float* __restrict__ running_mean, const float* __restrict__ running_var,
                                  float* __restrict__ mean, float* __restrict__ invstd, int64_t C, float eps) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    mean[c] = running_mean[c];
    invstd[c] = static_cast<float>(1.0 / sqrt(static_cast<double>(running_var[c]) + eps));
}

// y = (x - mean) * invstd * weight + bias; x, y (N, C, S) flat, total = N*C*S
__global__ void normalise_kernel(const float* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ invstd, const float* __restrict__ weight,
                                 const float* __restrict__ bias, float* __restrict__ y, int64_t total, int64_t C,
                                 int64_t S) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t c = (i / S) % C;
        const float k = weight ? __ldg(invstd + c) * __ldg(weight + c) : __ldg(invstd + c);
        const float sh = bias ? __ldg(bias + c) : 0.f;
        y[i] = (__ldg(x + i) - __ldg(mean + c)) * k + sh;
    }
}

// One thread per channel: the parameter gradients and coef (3, C) = (k, c1, c0) for
// gx = g * k + (x - mean) * c1 + c0
__global__ void grad_finish_kernel(const double* __restrict__ part, const float* __restrict__ weight,
                                   const float* __restrict__ invstd, float* gw, float* gb, float* __restrict__ coef,
                                   int64_t N, int64_t C, int64_t S, int P, bool training, bool have_sums) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double a = 0.0, b = 0.0;
    if (have_sums) total(part, C, P, c, a, b);
    const double M = static_cast<double>(N) * static_cast<double>(S);
    channel_grad_coefficients(a, b, invstd[c], weight ? weight[c] : 1.0, M, training, coef + c, coef + C + c,
                              coef + 2 * C + c, gw ? gw + c : nullptr, gb ? gb + c : nullptr);
}

// gx (N, C, S) from g, x and coef (3, C); in eval x is not read (a NaN in x stays out of gx)
__global__ void grad_input_kernel(const float* __restrict__ g, const float* __restrict__ x,
                                  const float* __restrict__ mean, const float* __restrict__ coef,
                                  float* __restrict__ gx, int64_t total, int64_t C, int64_t S, bool training) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t c = (i / S) % C;
        float v = __ldg(g + i) * __ldg(coef + c);
        if (training) v += (__ldg(x + i) - __ldg(mean + c)) * __ldg(coef + C + c) + __ldg(coef + 2 * C + c);
        gx[i] = v;
    }
}

unsigned channel_grid(int64_t C) { return static_cast<unsigned>(ceil_div(C, kThreads)); }

// y (N, C, S) = (x - mean) * invstd * weight + bias, mean/invstd (C,) already written on the stream
void normalise(const float* x, const float* mean, const float* invstd, const float* weight, const float* bias,
               float* y, int64_t N, int64_t C, int64_t S, cudaStream_t stream) {
    const int64_t total = N * C * S;
    normalise_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(x, mean, invstd, weight, bias, y,
                                                                                   total, C, S);
    CUDA_CHECK_LAUNCH("normalise_kernel");
}

}  // namespace

int64_t batch_norm_workspace(int64_t N, int64_t C, int64_t S) {
    // partial sums (P, 2, C) doubles, then coef (3, C) floats (2C doubles hold them)
    return pieces(N, C, S) * 2 * C + 2 * C;
}

void batch_norm_forward_train(const float* x, const float* weight, const float* bias, float* running_mean,
                              float* running_var, float* y, float* mean, float* invstd, double* workspace,
                              int64_t N, int64_t C, int64_t S, float momentum, float eps, bool unbiased,
                              cudaStream_t stream) {
    channel_sums(StatsTerm{x, S}, workspace, N, C, S, stream);
    const int P = static_cast<int>(pieces(N, C, S));
    stats_finish_kernel<<<channel_grid(C), kThreads, 0, stream>>>(workspace, x, running_mean, running_var, mean,
                                                                   invstd, N, C, S, P, momentum, eps, unbiased);
    CUDA_CHECK_LAUNCH("stats_finish_kernel");
    normalise(x, mean, invstd, weight, bias, y, N, C, S, stream);
}

void batch_norm_forward_eval(const float* x, const float* weight, const float* bias, const float* running_mean,
                             const float* running_var, float* y, float* mean, float* invstd, int64_t N,
                             int64_t C, int64_t S, float eps, cudaStream_t stream) {
    eval_stats_kernel<<<channel_grid(C), kThreads, 0, stream>>>(running_mean, running_var, mean, invstd, C, eps);
    CUDA_CHECK_LAUNCH("eval_stats_kernel");
    normalise(x, mean, invstd, weight, bias, y, N, C, S, stream);
}

void batch_norm_backward(const float* g, const float* x, const float* weight, const float* mean,
                         const float* invstd, float* gx, float* gw, float* gb, double* workspace, int64_t N,
                         int64_t C, int64_t S, bool training, cudaStream_t stream) {
    const int P = static_cast<int>(pieces(N, C, S));
    const bool sums = training || gw || gb;
    if (sums) channel_sums(GradTerm{g, x, mean}, workspace, N, C, S, stream);
    float* coef = reinterpret_cast<float*>(workspace + static_cast<int64_t>(P) * 2 * C);
    grad_finish_kernel<<<channel_grid(C), kThreads, 0, stream>>>(workspace, weight, invstd, gw, gb, coef, N, C, S, P,
                                                                  training, sums);
    CUDA_CHECK_LAUNCH("grad_finish_kernel");
    const int64_t total = N * C * S;
    grad_input_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(g, x, mean, coef, gx, total, C, S,
                                                                                    training);
    CUDA_CHECK_LAUNCH("grad_input_kernel");
}

}  // namespace deepkern::cuda
