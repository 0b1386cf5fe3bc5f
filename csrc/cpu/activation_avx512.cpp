// relu / softmax kernels compiled for AVX-512 (16-wide, masked tails); selected at run time by
// activation.cpp only when the CPU reports avx512f/dq/bw/vl.
#include "cpu/activation_rows.hpp"

namespace deepkern::cpu::act {

const Kernels& avx512_kernels() {
    static const Kernels k = make_kernels();
    return k;
}

}  // namespace deepkern::cpu::act
