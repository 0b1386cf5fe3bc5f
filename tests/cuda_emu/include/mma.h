// CPU emulation of the nvcuda::wmma subset the kernels use (tf32 m16n16k8, float accumulators).
// Fragments are emulated by meaning: every lane holds the whole tile (a GPU spreads it over the
// warp), so results do not depend on the undocumented element-to-lane mapping. Each *_sync call is
// a warp collective (all 32 lanes must arrive) and asserts the documented alignment rules: the
// pointer 256-bit aligned, ldm a multiple of 16 bytes. A store writes every 32nd element per lane,
// so the lanes' stores do not overlap (as on a GPU, the tile is written once).
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K>
struct tile_dims;
template <int M, int N, int K>
struct tile_dims<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K>
struct tile_dims<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K>
struct tile_dims<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int rows = tile_dims<Use, M, N, K>::rows, cols = tile_dims<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    float x[rows * cols];
};

// cvt.rna.tf32.f32: keep 10 mantissa bits, rounding to nearest with ties away from zero
inline float __float_to_tf32(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
    std::memcpy(&f, &b, 4);
    return f;
}

namespace detail {
inline void collective(const void* p, unsigned ldm, const char* what) {
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 32 != 0) cuda_emu::fail(what, "mma.h: pointer not 256-bit aligned", 0);
    if (ldm % 4 != 0) cuda_emu::fail(what, "mma.h: ldm not a multiple of 16 bytes", 0);
    if (cuda_emu::my_warp().bar.parties() != 32) cuda_emu::fail(what, "mma.h: wmma call with exited lanes", 0);
    cuda_emu::my_warp().bar.wait(-7, __FILE__, __LINE__);
}
inline float tf32_operand(float v) {  // the tensor cores read only the tf32 bits of an operand
    uint32_t b;
    std::memcpy(&b, &v, 4);
    b &= 0xffffe000u;
    std::memcpy(&v, &b, 4);
    return v;
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
    for (float& e : f.x) e = v;
}

template <class Use, int M, int N, int K, class T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const float* p, unsigned ldm) {
    detail::collective(p, ldm, "load_matrix_sync");
    using F = fragment<Use, M, N, K, T, row_major>;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = p[static_cast<int64_t>(r) * ldm + c];
    cuda_emu::my_warp().bar.wait(-8, __FILE__, __LINE__);  // every lane has read before anyone goes on
}

template <int M, int N, int K, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                     const fragment<matrix_a, M, N, K, precision::tf32, LA>& a,
                     const fragment<matrix_b, M, N, K, precision::tf32, LB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
    detail::collective(nullptr, 0, "mma_sync");
    float ta[M * K], tb[K * N], out[M * N];
    for (int e = 0; e < M * K; ++e) ta[e] = detail::tf32_operand(a.x[e]);
    for (int e = 0; e < K * N; ++e) tb[e] = detail::tf32_operand(b.x[e]);
    std::memcpy(out, c.x, sizeof(out));
    for (int i = 0; i < M; ++i)
        for (int k = 0; k < K; ++k)
            for (int j = 0; j < N; ++j) out[i * N + j] += ta[i * K + k] * tb[k * N + j];
    std::memcpy(d.x, out, sizeof(out));
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                              layout_t layout) {
    detail::collective(p, ldm, "store_matrix_sync");
    for (int e = cuda_emu::tl_lane; e < M * N; e += 32) {
        const int r = e / N, c = e % N;
        if (layout == mem_row_major)
            p[static_cast<int64_t>(r) * ldm + c] = f.x[e];
        else
            p[static_cast<int64_t>(c) * ldm + r] = f.x[e];
    }
}

}  // namespace nvcuda::wmma
