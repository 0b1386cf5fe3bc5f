// Winograd convolution for 3x3 stride-1 layers (fp32): the forward and the input gradient, with
// F(2x2, 3x3) (16 GEMMs over transformed tiles, 2.25x fewer multiply-adds than 9 taps per output
// on whole tiles) or on large planes F(4x4, 3x3) (36 GEMMs, 4x fewer). conv2d.cpp calls these
// first and runs its direct path when they decline (return false).
#pragma once
#include <cstdint>

#include "cpu/conv2d.hpp"

namespace deepkern::cpu {

// DEEPKERN_WINOGRAD, read at every call: auto (default, also when unset or empty: where measured
// faster, F(4x4, 3x3) on large planes, see winograd_wanted in conv2d_winograd.cpp), on (every
// shape it can do: 3x3, stride 1, padding <= 2, with F(2x2, 3x3), the more accurate), off, or
// f2 / f4 (every shape it can do with that tile size: f2 is on; for tests and benchmarks).
// Another value throws std::invalid_argument (ValueError in Python).
enum class WinogradMode { automatic, on, off, f2, f4 };
WinogradMode winograd_mode();

// Whether winograd_forward runs this layer (mode and shape; it may still decline on non-finite data)
bool winograd_forward_wanted(const Conv2dShape& s, bool bf16 = false);

// conv2d_forward by Winograd: y (N, OC, OH, OW), or each image's (OC, OH, OW) block handed to
// sink (bias added; relu: max(., 0), NaN kept). Returns false, having written nothing the direct
// path does not overwrite, when the mode or shape rules it out or x, w hold an inf or NaN (the
// transforms would turn inf into NaN where the direct sum gives inf): the caller then runs the
// direct path. A sink may have been given some images already: it must accept them again.
// bf16: the transforms stay fp32, the transformed tiles and weights are rounded to bf16 for the
// products (the bf16 GEMM, fp32 sums; only with bf16_available()); the caller's direct path is
// then the bf16 one (conv2d_bf16.cpp), and auto chooses by bf16's own measurements.
bool winograd_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                      const ConvOutputSink* sink, bool bf16 = false);

// The input gradient gx (N, C, H, W) of conv2d_forward from gy (N, OC, OH, OW), or from source
// when gy is null: the full correlation of gy with the weights turned 180 degrees, by the same
// Winograd kernel. Returns false (gx then holds nothing useful) as winograd_forward.
bool winograd_input_grad(const Conv2dShape& s, const float* gy, const ConvGradSource* source, const float* w,
                         float* gx, bool bf16 = false);
// Whether winograd_input_grad runs this layer (mode and shape; it may still decline on non-finite data)
bool winograd_input_grad_wanted(const Conv2dShape& s, bool bf16 = false);

namespace wino {

constexpr int kLanes = 16;  // tiles per vector block of the transforms (one zmm of floats)

// One instruction set's transforms (conv2d_winograd_tiles.hpp, where the shapes are described).
struct TileKernels {
    float (*input_tiles)(const float* x, int H, int W, int PH, int PW, int th0, int th1, int TW, int TWv, float* v,
                         int64_t v_xi, float* work);
    void (*output_tiles)(const float* m, int64_t m_xi, int T, float bias, bool relu, float* yt, int64_t ldy);
    void (*place_tiles)(const float* yt, int64_t ldy, int64_t t0, int rows, int TW, int TWv, float* out,
                        int64_t ldo);
    // the same for F(4x4, 3x3) (conv2d_winograd_tiles4.hpp)
    float (*input_tiles4)(const float* x, int H, int W, int PH, int PW, int th0, int th1, int TW, int TWv, float* v,
                          int64_t v_xi, float* work);
    void (*output_tiles4)(const float* m, int64_t m_xi, int T, float bias, bool relu, float* yt, int64_t ldy);
    void (*place_tiles4)(const float* yt, int64_t ldy, int64_t t0, int rows, int TW, int TWv, float* out,
                         int64_t ldo);
};
const TileKernels& generic_tiles();  // conv2d_winograd.cpp
const TileKernels& avx2_tiles();     // conv2d_winograd_avx2.cpp
const TileKernels& avx512_tiles();   // conv2d_winograd_avx512.cpp

}  // namespace wino
}  // namespace deepkern::cpu
