// Fused optimizer loops compiled for AVX-512 (16-wide); selected at run time by optim.cpp.
#include "cpu/optim_kernels.hpp"

namespace deepkern::cpu::optim {

const Kernels& avx512_kernels() {
    static const Kernels k = make_kernels();
    return k;
}

}  // namespace deepkern::cpu::optim
