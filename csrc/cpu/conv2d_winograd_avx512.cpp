// The Winograd tile transforms (conv2d_winograd_tiles.hpp) compiled for AVX512; chosen at run
// time by conv2d_winograd.cpp only when that SIMD variant is active.
#include "cpu/conv2d_winograd_tiles.hpp"

namespace deepkern::cpu::wino {

const TileKernels& avx512_tiles() {
    static const TileKernels k = make_tile_kernels();
    return k;
}

}  // namespace deepkern::cpu::wino
