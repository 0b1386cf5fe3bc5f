// conv2d as implicit GEMMs: the im2col matrix is never stored; each tile load gathers
// its elements from x (or grad_out) directly, zero where the window hangs over the padding.
//
//   forward  y  (OC, N*OH*OW)  = w  (OC, C*KH*KW)   @ col(x) (C*KH*KW, N*OH*OW)
//   dgrad    gx (C, N*H*W)     = wT (C, OC*KH*KW)   @ scatter(gy) (OC*KH*KW, N*H*W)
//   wgrad    gw (OC, C*KH*KW)  = gy (OC, N*OH*OW)   @ col(x)^T (N*OH*OW, C*KH*KW)   (split over the sum)
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/conv2d.cuh"
#include "cuda/reduce.cuh"

namespace deepkern::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBM = 64, kBN = 64, kBK = 16;  // block tile; 16 x 16 threads, 4 x 4 outputs each

enum Mode : int { kForward = 0, kDgrad = 1, kWgrad = 2 };

struct ConvGemm {
    Conv2dShape s;
    const float* x;     // (N, C, H, W)
    const float* w;     // (OC, C, KH, KW)
    const float* gy;    // (N, OC, OH, OW)
    const float* bias;  // (OC,) or null (forward)
    float* out;         // y, gx or gw
    int M;              // GEMM rows
    int64_t Ncols, K;   // GEMM columns and reduction length
    int64_t k_chunk;    // reduction slice per blockIdx.z (wgrad split)
    bool atomic;        // accumulate with atomics (wgrad split > 1)
};

// Left operand element (m, k).
template <int MODE>
__device__ __forceinline__ float lhs(const ConvGemm& g, int m, int64_t k) {
    const Conv2dShape& s = g.s;
    if (MODE == kForward) {  // w (OC, C*KH*KW)
        return __ldg(g.w + static_cast<int64_t>(m) * s.C * s.KH * s.KW + k);
    } else if (MODE == kDgrad) {  // m = c, k = (oc, kh, kw): w[oc, c, kh, kw]
        const int khw = s.KH * s.KW;
        const int oc = static_cast<int>(k / khw), r = static_cast<int>(k % khw);
        return __ldg(g.w + (static_cast<int64_t>(oc) * s.C + m) * khw + r);
    } else {  // m = oc, k = (n, p): gy[n, oc, p]
        const int64_t P = static_cast<int64_t>(s.OH) * s.OW;
        const int64_t n = k / P, p = k % P;
        return __ldg(g.gy + (n * s.OC + m) * P + p);
    }
}

// x[n, c, oh*SH - PH + kh, ow*SW - PW + kw], zero in the padding.
__device__ __forceinline__ float im2col(const ConvGemm& g, int64_t n, int c, int oh, int ow, int kh, int kw) {
    const Conv2dShape& s = g.s;
    const int h = oh * s.SH - s.PH + kh, w = ow * s.SW - s.PW + kw;
    if (h < 0 || h >= s.H || w < 0 || w >= s.W) return 0.f;
    return __ldg(g.x + ((n * s.C + c) * s.H + h) * s.W + w);
}

// Right operand element (k, j).
template <int MODE>
__device__ __forceinline__ float rhs(const ConvGemm& g, int64_t k, int64_t j) {
    const Conv2dShape& s = g.s;
    const int khw = s.KH * s.KW;
    if (MODE == kForward) {  // k = (c, kh, kw), j = (n, oh, ow)
        const int64_t P = static_cast<int64_t>(s.OH) * s.OW;
        const int64_t n = j / P, p = j % P;  // p stays 64-bit: OH*OW may pass 2^31
        const int c = static_cast<int>(k / khw), r = static_cast<int>(k % khw);
        return im2col(g, n, c, static_cast<int>(p / s.OW), static_cast<int>(p % s.OW), r / s.KW, r % s.KW);
    } else if (MODE == kDgrad) {  // k = (oc, kh, kw), j = (n, h, w): gy[n, oc, oh, ow] when it saw (h, w)
        const int64_t HW = static_cast<int64_t>(s.H) * s.W;
        const int64_t n = j / HW, hw = j % HW;  // hw stays 64-bit: H*W may pass 2^31
        const int oc = static_cast<int>(k / khw), r = static_cast<int>(k % khw);
        const int th = static_cast<int>(hw / s.W) + s.PH - r / s.KW;  // oh*SH
        const int tw = static_cast<int>(hw % s.W) + s.PW - r % s.KW;  // ow*SW
        if (th < 0 || tw < 0 || th % s.SH != 0 || tw % s.SW != 0) return 0.f;
        const int oh = th / s.SH, ow = tw / s.SW;
        if (oh >= s.OH || ow >= s.OW) return 0.f;
        return __ldg(g.gy + ((n * s.OC + oc) * s.OH + oh) * s.OW + ow);
    } else {  // k = (n, p), j = (c, kh, kw)
        const int64_t P = static_cast<int64_t>(s.OH) * s.OW;
        const int64_t n = k / P, p = k % P;
        const int c = static_cast<int>(j / khw), r = static_cast<int>(j % khw);
        return im2col(g, n, c, static_cast<int>(p / s.OW), static_cast<int>(p % s.OW), r / s.KW, r % s.KW);
    }
}

template <int MODE>
__device__ __forceinline__ void store(const ConvGemm& g, int m, int64_t j, float v) {
    const Conv2dShape& s = g.s;
    if (MODE == kForward) {  // y[n, oc, p]
        const int64_t P = static_cast<int64_t>(s.OH) * s.OW;
        if (g.bias != nullptr) v += __ldg(g.bias + m);
        g.out[((j / P) * s.OC + m) * P + j % P] = v;
    } else if (MODE == kDgrad) {  // gx[n, c, h, w]
        const int64_t HW = static_cast<int64_t>(s.H) * s.W;
        g.out[((j / HW) * s.C + m) * HW + j % HW] = v;
    } else {  // gw[oc, c*kh*kw]
        float* p = g.out + static_cast<int64_t>(m) * g.Ncols + j;
        if (g.atomic)
            atomicAdd(p, v);
        else
            *p = v;
    }
}

// blockIdx.x over GEMM columns, blockIdx.y over rows, blockIdx.z over reduction slices.
template <int MODE>
__global__ void __launch_bounds__(kThreads) conv_gemm_kernel(ConvGemm g) {
    __shared__ __align__(16) float As[kBK][kBM];
    __shared__ __align__(16) float Bs[kBK][kBN];
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int m0 = blockIdx.y * kBM;
    const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kBN;
    const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * g.k_chunk;
    const int64_t k_end = min(g.K, k_begin + g.k_chunk);

    // This thread gathers A[m0 + t/4][k + (t%4)*4 + e] and B[k + t/16][j0 + (t%16)*4 + e], e < 4.
    const int am = t / 4, ak = (t % 4) * 4;
    const int bk = t / 16, bj = (t % 16) * 4;
    float ra[4], rb[4];
    auto fetch = [&](int64_t k0) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int64_t ka = k0 + ak + e;
            ra[e] = (m0 + am < g.M && ka < k_end) ? lhs<MODE>(g, m0 + am, ka) : 0.f;
            const int64_t kb = k0 + bk, jb = j0 + bj + e;
            rb[e] = (kb < k_end && jb < g.Ncols) ? rhs<MODE>(g, kb, jb) : 0.f;
        }
    };

    float acc[4][4] = {};
    fetch(k_begin);
    for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            As[ak + e][am] = ra[e];
            Bs[bk][bj + e] = rb[e];
        }
        __syncthreads();
        if (k0 + kBK < k_end) fetch(k0 + kBK);  // next gathers in flight during the multiply
#pragma unroll
        for (int k = 0; k < kBK; ++k) {
            const float4 a = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
            const float4 b = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) acc[i][jj] = fmaf(av[i], bv[jj], acc[i][jj]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty * 4 + i;
        if (m >= g.M) continue;
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
            const int64_t j = j0 + tx * 4 + jj;
            if (j < g.Ncols) store<MODE>(g, m, j, acc[i][jj]);
        }
    }
}

// gy is (N, OC, OH, OW), gb (OC,): one block per channel
__global__ void conv_bias_grad_kernel(const float* __restrict__ gy, float* __restrict__ gb, int N, int OC,
                                      int64_t P) {
    __shared__ float sh[32];
    const int oc = blockIdx.x;
    float acc = 0.f;
    for (int n = 0; n < N; ++n) {
        const float* plane = gy + (static_cast<int64_t>(n) * OC + oc) * P;
        for (int64_t p = threadIdx.x; p < P; p += blockDim.x) acc += plane[p];
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) gb[oc] = acc;
}

template <int MODE>
void launch(ConvGemm& g, int splits, cudaStream_t stream) {
    g.k_chunk = ceil_div(ceil_div(g.K, splits), kBK) * kBK;
    splits = static_cast<int>(ceil_div(g.K, g.k_chunk));
    g.atomic = splits > 1;
    const int64_t row_tiles = ceil_div(g.M, kBM);
    if (row_tiles > 65535) throw std::invalid_argument("conv2d: too many channels for one launch");
    dim3 grid(static_cast<unsigned>(ceil_div(g.Ncols, kBN)), static_cast<unsigned>(row_tiles),
              static_cast<unsigned>(splits));
    conv_gemm_kernel<MODE><<<grid, kThreads, 0, stream>>>(g);
    CUDA_CHECK_LAUNCH("conv_gemm_kernel");
}

ConvGemm base(const Conv2dShape& s, const float* x, const float* w, const float* gy) {
    ConvGemm g{};
    g.s = s;
    g.x = x;
    g.w = w;
    g.gy = gy;
    return g;
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y,
                    cudaStream_t stream) {
    ConvGemm g = base(s, x, w, nullptr);
    g.bias = bias;
    g.out = y;
    g.M = s.OC;
    g.Ncols = static_cast<int64_t>(s.N) * s.OH * s.OW;
    g.K = static_cast<int64_t>(s.C) * s.KH * s.KW;
    launch<kForward>(g, 1, stream);
}

void conv2d_backward(const Conv2dShape& s, const float* gy, const float* x, const float* w, float* gx, float* gw,
                     float* gb, cudaStream_t stream) {
    if (gx != nullptr) {  // null: the caller does not want the input gradient (a first layer)
        ConvGemm d = base(s, x, w, gy);
        d.out = gx;
        d.M = s.C;
        d.Ncols = static_cast<int64_t>(s.N) * s.H * s.W;
        d.K = static_cast<int64_t>(s.OC) * s.KH * s.KW;
        launch<kDgrad>(d, 1, stream);
    }

    // The weight gradient has few output tiles and a long sum (the whole batch): split the sum
    // over blockIdx.z so the GPU fills up, accumulating into a zeroed gw.
    ConvGemm wg = base(s, x, w, gy);
    wg.out = gw;
    wg.M = s.OC;
    wg.Ncols = static_cast<int64_t>(s.C) * s.KH * s.KW;
    wg.K = static_cast<int64_t>(s.N) * s.OH * s.OW;
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const int64_t tiles = ceil_div(wg.M, kBM) * ceil_div(wg.Ncols, kBN);
    int64_t splits = ceil_div(2LL * sms, tiles);                    // about two blocks per SM
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, wg.K / 256));  // at least 256 terms each
    splits = std::max<int64_t>(1, std::min<int64_t>(splits, 1024));
    if (splits > 1)
        CUDA_CHECK(cudaMemsetAsync(gw, 0, sizeof(float) * static_cast<size_t>(wg.M) * wg.Ncols, stream));
    launch<kWgrad>(wg, static_cast<int>(splits), stream);

    if (gb != nullptr) {
        conv_bias_grad_kernel<<<static_cast<unsigned>(s.OC), kThreads, 0, stream>>>(
            gy, gb, s.N, s.OC, static_cast<int64_t>(s.OH) * s.OW);
        CUDA_CHECK_LAUNCH("conv_bias_grad_kernel");
    }
}

}  // namespace deepkern::cuda
