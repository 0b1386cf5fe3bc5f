// relu / softmax kernels compiled for AVX2 + FMA (8-wide); selected at run time by activation.cpp.
#include "cpu/activation_rows.hpp"

namespace deepkern::cpu::act {

const Kernels& avx2_kernels() {
    static const Kernels k = make_kernels();
    return k;
}

}  // namespace deepkern::cpu::act
