// The Winograd weight gradient's transforms compiled for AVX512 (conv2d_winograd_wgrad_tiles.hpp);
// conv2d_winograd_wgrad.cpp calls them only when that SIMD variant is active.
#include "cpu/conv2d_winograd_wgrad_tiles.hpp"

namespace deepkern::cpu::wgrad {
const TileKernels& avx512_tiles() { return kTileKernels; }
}  // namespace deepkern::cpu::wgrad
