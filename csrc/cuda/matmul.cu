// matmul on the GPU: a register-blocked float32 SIMT GEMM (two tile sizes) and a TF32
// tensor-core GEMM (wmma, sm_80+), both with bias and ReLU fused in the store.
//
// Operands are addressed in their *stored* layout. For op(X) of shape (R, K) (R = M for A,
// R = N for B seen as op(B)^T), X is stored (R, K) when "k-contiguous", else (K, R).
#include <mma.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "cuda/activation.cuh"
#include "cuda/common.cuh"
#include "cuda/matmul.cuh"
#include "cuda/reduce.cuh"

namespace deepkern::cuda {
namespace {

constexpr int kThreads = 256;

struct GemmArgs {
    const float* A;     // op(A) is (M, K)
    const float* B;     // op(B) is (K, N)
    const float* bias;  // (N,) or null
    float* C;           // (M, N)
    int M, N, K;
    bool a_kcontig;     // A stored (M, K) (not transposed)
    bool b_kcontig;     // B stored (N, K) (transposed)
    bool vec_a, vec_b, vec_c;  // float4 access is legal (row length % 4 == 0, 16-byte aligned)
    bool relu;
};

// Elements (i, j..j+3) of X stored row-major (rows, cols); zero outside the matrix.
// vec: cols % 4 == 0 and X 16-byte aligned, so a quad is entirely inside or outside.
__device__ __forceinline__ float4 load_quad(const float* __restrict__ X, int rows, int cols, int i, int j,
                                            bool vec) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (i >= rows || j >= cols) return v;
    const float* p = X + static_cast<int64_t>(i) * cols + j;
    if (vec) return __ldg(reinterpret_cast<const float4*>(p));
    v.x = __ldg(p);
    if (j + 1 < cols) v.y = __ldg(p + 1);
    if (j + 2 < cols) v.z = __ldg(p + 2);
    if (j + 3 < cols) v.w = __ldg(p + 3);
    return v;
}

__device__ __forceinline__ float epilogue(float v, const float* __restrict__ bias, int n, bool relu) {
    if (bias != nullptr) v += __ldg(bias + n);
    return relu ? relu_nan(v) : v;
}

// ------------------------------------------------------------------ SIMT float32 GEMM
// Block tile BT x BT of C, BK = 1024 / BT deep, 256 threads as 16 x 16, each thread a
// (BT/16) x (BT/16) register block made of 4x4 quads spaced 64 apart (conflict-free float4
// reads of shared memory). Shared tiles are k-major (S[k][r]) and double-buffered; the next
// tile is fetched into registers while the current one is multiplied.
template <int BT>
struct SimtTile {
    static constexpr int BK = 1024 / BT;   // each thread loads one quad of A and one of B per tile
    static constexpr int TR = BT / 16;     // register block edge (8 or 4)
};

// This thread's quad of the (BT x BK) slice of op(X) starting at (r0, k0), and where it goes.
template <int BT>
__device__ __forceinline__ float4 fetch_slice(const float* __restrict__ X, int R, int K, int r0, int k0,
                                              bool kcontig, bool vec, int t) {
    constexpr int BK = SimtTile<BT>::BK;
    if (kcontig) {  // stored (R, K): a quad runs along k
        return load_quad(X, R, K, r0 + t / (BK / 4), k0 + (t % (BK / 4)) * 4, vec);
    }
    // stored (K, R): a quad runs along r
    return load_quad(X, K, R, k0 + t / (BT / 4), r0 + (t % (BT / 4)) * 4, vec);
}

template <int BT>
__device__ __forceinline__ void stash_slice(float (*S)[BT], float4 v, bool kcontig, int t) {
    constexpr int BK = SimtTile<BT>::BK;
    if (kcontig) {
        int r = t / (BK / 4), k = (t % (BK / 4)) * 4;
        S[k + 0][r] = v.x;
        S[k + 1][r] = v.y;
        S[k + 2][r] = v.z;
        S[k + 3][r] = v.w;
    } else {
        int k = t / (BT / 4), r = (t % (BT / 4)) * 4;
        *reinterpret_cast<float4*>(&S[k][r]) = v;
    }
}

// The C tile of a block: blockIdx.x runs over all tiles, M fastest. One grid dimension of up to
// 2^31 - 1 blocks (gridDim.y would cap N at 65535 tiles).
__device__ __forceinline__ void tile_origin(const GemmArgs& g, int bm, int bn, int& m0, int& n0) {
    const unsigned tiles_m = static_cast<unsigned>((g.M + bm - 1) / bm);
    m0 = static_cast<int>(blockIdx.x % tiles_m) * bm;
    n0 = static_cast<int>(blockIdx.x / tiles_m) * bn;
}

// C (M, N) tile at tile_origin
template <int BT>
__global__ void __launch_bounds__(kThreads) sgemm_simt_kernel(GemmArgs g) {
    constexpr int BK = SimtTile<BT>::BK;
    constexpr int TR = SimtTile<BT>::TR;
    __shared__ __align__(16) float As[2][BK][BT];
    __shared__ __align__(16) float Bs[2][BK][BT];

    const int t = threadIdx.x;
    const int tx = t % 16, ty = t / 16;
    int m0, n0;
    tile_origin(g, BT, BT, m0, n0);
    const int tiles = (g.K + BK - 1) / BK;

    float acc[TR][TR];
#pragma unroll
    for (int i = 0; i < TR; ++i)
#pragma unroll
        for (int j = 0; j < TR; ++j) acc[i][j] = 0.f;

    float4 ra = fetch_slice<BT>(g.A, g.M, g.K, m0, 0, g.a_kcontig, g.vec_a, t);
    float4 rb = fetch_slice<BT>(g.B, g.N, g.K, n0, 0, g.b_kcontig, g.vec_b, t);
    stash_slice<BT>(As[0], ra, g.a_kcontig, t);
    stash_slice<BT>(Bs[0], rb, g.b_kcontig, t);
    __syncthreads();

    for (int kt = 0; kt < tiles; ++kt) {
        const int cur = kt & 1;
        const bool more = kt + 1 < tiles;
        if (more) {  // global loads in flight while this tile is multiplied
            ra = fetch_slice<BT>(g.A, g.M, g.K, m0, (kt + 1) * BK, g.a_kcontig, g.vec_a, t);
            rb = fetch_slice<BT>(g.B, g.N, g.K, n0, (kt + 1) * BK, g.b_kcontig, g.vec_b, t);
        }
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[TR], b[TR];
#pragma unroll
            for (int q = 0; q < TR / 4; ++q) {
                float4 va = *reinterpret_cast<const float4*>(&As[cur][k][q * 64 + ty * 4]);
                float4 vb = *reinterpret_cast<const float4*>(&Bs[cur][k][q * 64 + tx * 4]);
                a[q * 4 + 0] = va.x; a[q * 4 + 1] = va.y; a[q * 4 + 2] = va.z; a[q * 4 + 3] = va.w;
                b[q * 4 + 0] = vb.x; b[q * 4 + 1] = vb.y; b[q * 4 + 2] = vb.z; b[q * 4 + 3] = vb.w;
            }
#pragma unroll
            for (int i = 0; i < TR; ++i)
#pragma unroll
                for (int j = 0; j < TR; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        if (more) {  // the other buffer is free: everyone passed the previous barrier
            stash_slice<BT>(As[cur ^ 1], ra, g.a_kcontig, t);
            stash_slice<BT>(Bs[cur ^ 1], rb, g.b_kcontig, t);
        }
        __syncthreads();
    }

    // epilogue: row i of the register block is C row m0 + (i/4)*64 + ty*4 + i%4
#pragma unroll
    for (int i = 0; i < TR; ++i) {
        const int m = m0 + (i / 4) * 64 + ty * 4 + (i % 4);
        if (m >= g.M) continue;
        float* crow = g.C + static_cast<int64_t>(m) * g.N;
#pragma unroll
        for (int q = 0; q < TR / 4; ++q) {
            const int n = n0 + q * 64 + tx * 4;
            if (n >= g.N) continue;
            float v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j)
                v[j] = (n + j < g.N) ? epilogue(acc[i][q * 4 + j], g.bias, n + j, g.relu) : 0.f;
            if (g.vec_c) {  // N % 4 == 0: the quad is entirely inside
                *reinterpret_cast<float4*>(crow + n) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (n + j < g.N) crow[n + j] = v[j];
            }
        }
    }
}

// ------------------------------------------------------------------ TF32 tensor-core GEMM
// Block tile 128 x 128 x 32, 8 warps as 2 (m) x 4 (n), each warp 64 x 32 = 4 x 2 wmma
// m16n16k8 accumulators. Inputs are rounded to TF32 when staged in shared memory.
constexpr int kTcBM = 128, kTcBN = 128;  // block tile (the depth and padding live in the kernel)

__global__ void __launch_bounds__(kThreads) sgemm_tf32_kernel(GemmArgs g) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    constexpr int kTcBK = 32, kTcPad = 4;  // tile depth; row padding keeps wmma loads 32-byte aligned
    __shared__ __align__(32) float As[kTcBM][kTcBK + kTcPad];  // (m, k)
    __shared__ __align__(32) float Bs[kTcBK][kTcBN + kTcPad];  // (k, n)

    const int t = threadIdx.x, warp = t / 32, lane = t % 32;
    const int wm = warp / 4, wn = warp % 4;
    int m0, n0;
    tile_origin(g, kTcBM, kTcBN, m0, n0);
    const int tiles = (g.K + kTcBK - 1) / kTcBK;

    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

    // Each thread moves 4 quads of A's and 4 of B's 128 x 32 slices per tile.
    float4 ra[4], rb[4];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int idx = t + q * kThreads;
            ra[q] = g.a_kcontig ? load_quad(g.A, g.M, g.K, m0 + idx / 8, k0 + (idx % 8) * 4, g.vec_a)
                                : load_quad(g.A, g.K, g.M, k0 + idx / 32, m0 + (idx % 32) * 4, g.vec_a);
            rb[q] = g.b_kcontig ? load_quad(g.B, g.N, g.K, n0 + idx / 8, k0 + (idx % 8) * 4, g.vec_b)
                                : load_quad(g.B, g.K, g.N, k0 + idx / 32, n0 + (idx % 32) * 4, g.vec_b);
        }
    };
    auto stash = [&]() {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int idx = t + q * kThreads;
            const float a[4] = {wmma::__float_to_tf32(ra[q].x), wmma::__float_to_tf32(ra[q].y),
                                wmma::__float_to_tf32(ra[q].z), wmma::__float_to_tf32(ra[q].w)};
            const float b[4] = {wmma::__float_to_tf32(rb[q].x), wmma::__float_to_tf32(rb[q].y),
                                wmma::__float_to_tf32(rb[q].z), wmma::__float_to_tf32(rb[q].w)};
            if (g.a_kcontig) {
                const int m = idx / 8, k = (idx % 8) * 4;
                for (int e = 0; e < 4; ++e) As[m][k + e] = a[e];
            } else {
                const int k = idx / 32, m = (idx % 32) * 4;
                for (int e = 0; e < 4; ++e) As[m + e][k] = a[e];
            }
            if (g.b_kcontig) {
                const int n = idx / 8, k = (idx % 8) * 4;
                for (int e = 0; e < 4; ++e) Bs[k + e][n] = b[e];
            } else {
                const int k = idx / 32, n = (idx % 32) * 4;
                for (int e = 0; e < 4; ++e) Bs[k][n + e] = b[e];
            }
        }
    };

    fetch(0);
    for (int kt = 0; kt < tiles; ++kt) {
        stash();
        __syncthreads();
        if (kt + 1 < tiles) fetch((kt + 1) * kTcBK);
#pragma unroll
        for (int kk = 0; kk < kTcBK; kk += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> af[4];
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> bf[2];
#pragma unroll
            for (int i = 0; i < 4; ++i) wmma::load_matrix_sync(af[i], &As[wm * 64 + i * 16][kk], kTcBK + kTcPad);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(bf[j], &Bs[kk][wn * 32 + j * 16], kTcBN + kTcPad);
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
        }
        __syncthreads();
    }

    // Epilogue through a 16 x 16 per-warp scratch (As is free now: the loop ended on a barrier).
    float* scratch = &As[0][0] + warp * 256;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            wmma::store_matrix_sync(scratch, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                const int m = m0 + wm * 64 + i * 16 + e / 16;
                const int n = n0 + wn * 32 + j * 16 + e % 16;
                if (m < g.M && n < g.N)
                    g.C[static_cast<int64_t>(m) * g.N + n] = epilogue(scratch[e], g.bias, n, g.relu);
            }
            __syncwarp();
        }
    }
#endif
}

// ------------------------------------------------------------------ column sums
// X is (M, N), out is (N,): 32 columns per block, 8 row-phases reduced in shared memory.
__global__ void column_sum_kernel(const float* __restrict__ X, float* __restrict__ out, int M, int N) {
    __shared__ float part[8][33];
    const int col = blockIdx.x * 32 + threadIdx.x;
    float s = 0.f;
    if (col < N)
        for (int r = threadIdx.y; r < M; r += 8) s += X[static_cast<int64_t>(r) * N + col];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < N) {
        float total = 0.f;
        for (int q = 0; q < 8; ++q) total += part[q][threadIdx.x];
        out[col] = total;
    }
}

// ------------------------------------------------------------------ variant selection
enum Variant : int { kFp32 = 0, kTf32 = 1 };

int parse_variant(const std::string& name) {
    if (name == "fp32") return kFp32;
    if (name == "tf32") return kTf32;
    throw std::invalid_argument("matmul variant: expected 'fp32' or 'tf32', got '" + name + "'");
}

std::atomic<int>& variant_slot() {
    static std::atomic<int> slot([] {
        const char* env = std::getenv("DEEPKERN_CUDA_MATMUL");
        if (env == nullptr || *env == '\0') return static_cast<int>(kFp32);
        try {
            return parse_variant(env);
        } catch (const std::invalid_argument&) {
            return static_cast<int>(kFp32);  // a bad environment value must not break import
        }
    }());
    return slot;
}

struct DeviceInfo {
    int sms, major;
};

DeviceInfo current_device_info() {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    DeviceInfo info{};
    CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, dev));
    return info;
}

// One block per bt x bt tile of C (M, N), all on gridDim.x (see tile_origin).
unsigned tile_grid(int M, int N, int bt) {
    const int64_t tiles = ceil_div(M, bt) * ceil_div(N, bt);
    if (tiles > 2147483647LL) throw std::invalid_argument("matmul: too many output tiles for one launch");
    return static_cast<unsigned>(tiles);
}

// op(X) is (M, K), op(Y) is (K, N); C (M, N) = relu?(op(X) @ op(Y) + bias)
void gemm(const float* X, const float* Y, const float* bias, float* C, int M, int N, int K, bool tx, bool ty,
          bool relu, cudaStream_t stream) {
    if (M <= 0 || N <= 0) return;
    GemmArgs g{};
    g.A = X; g.B = Y; g.bias = bias; g.C = C;
    g.M = M; g.N = N; g.K = K;
    g.a_kcontig = !tx;
    g.b_kcontig = ty;
    g.vec_a = aligned16(X) && ((g.a_kcontig ? K : M) % 4 == 0);
    g.vec_b = aligned16(Y) && ((g.b_kcontig ? K : N) % 4 == 0);
    g.vec_c = aligned16(C) && (N % 4 == 0);
    g.relu = relu;

    const DeviceInfo dev = current_device_info();
    if (variant_slot().load() == kTf32 && dev.major >= 8) {
        sgemm_tf32_kernel<<<tile_grid(M, N, kTcBM), kThreads, 0, stream>>>(g);
        CUDA_CHECK_LAUNCH("sgemm_tf32_kernel");
        return;
    }
    // Large tiles reuse more per load; small problems need more blocks to fill the GPU.
    const int64_t big_tiles = ceil_div(M, 128) * ceil_div(N, 128);
    if (big_tiles >= dev.sms) {
        sgemm_simt_kernel<128><<<tile_grid(M, N, 128), kThreads, 0, stream>>>(g);
        CUDA_CHECK_LAUNCH("sgemm_simt_kernel<128>");
    } else {
        sgemm_simt_kernel<64><<<tile_grid(M, N, 64), kThreads, 0, stream>>>(g);
        CUDA_CHECK_LAUNCH("sgemm_simt_kernel<64>");
    }
}

}  // namespace

std::string matmul_variant() { return variant_slot().load() == kTf32 ? "tf32" : "fp32"; }

void set_matmul_variant(const std::string& name) { variant_slot().store(parse_variant(name)); }

void column_sum(const float* X, float* out, int M, int N, cudaStream_t stream) {
    dim3 block(32, 8);
    dim3 grid(static_cast<unsigned>(ceil_div(N, 32)));
    column_sum_kernel<<<grid, block, 0, stream>>>(X, out, M, N);
    CUDA_CHECK_LAUNCH("column_sum_kernel");
}

// A is (M, K) [(K, M) if trans_a], B is (K, N) [(N, K) if trans_b], bias (N,), C (M, N)
void matmul_forward(const float* A, const float* B, const float* bias, float* C, int M, int N, int K,
                    bool trans_a, bool trans_b, bool relu, cudaStream_t stream) {
    gemm(A, B, bias, C, M, N, K, trans_a, trans_b, relu, stream);
}

// G is (M, N); dA like A, dB like B, dbias (N,)
void matmul_backward(const float* G, const float* A, const float* B, const float* out, float* gmask,
                     float* dA, float* dB, float* dbias, int M, int N, int K, bool trans_a, bool trans_b,
                     cudaStream_t stream) {
    const float* g = G;
    if (out != nullptr) {  // fused ReLU: the gradient flows where the output was positive
        relu_backward(G, out, gmask, static_cast<int64_t>(M) * N, stream);
        g = gmask;
    }
    // d op(A) = g @ op(B)^T (M, K);  d op(B) = op(A)^T @ g (K, N); transposed back when stored so.
    if (!trans_a)
        gemm(g, B, nullptr, dA, M, K, N, false, !trans_b, false, stream);
    else
        gemm(B, g, nullptr, dA, K, M, N, trans_b, true, false, stream);
    if (!trans_b)
        gemm(A, g, nullptr, dB, K, N, M, !trans_a, false, false, stream);
    else
        gemm(g, A, nullptr, dB, N, K, M, true, trans_a, false, stream);
    if (dbias != nullptr) column_sum(g, dbias, M, N, stream);
}

}  // namespace deepkern::cuda
