// Fused optimizer loops compiled for AVX2 + FMA (8-wide); selected at run time by optim.cpp.
#include "cpu/optim_kernels.hpp"

namespace deepkern::cpu::optim {

const Kernels& avx2_kernels() {
    static const Kernels k = make_kernels();
    return k;
}

}  // namespace deepkern::cpu::optim
