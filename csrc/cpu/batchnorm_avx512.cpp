// Batch-norm run loops compiled for AVX-512 (8 doubles / 16 floats a vector); selected at run time by batchnorm.cpp.
#include "cpu/batchnorm_runs.hpp"

namespace deepkern::cpu::bn {

const Kernels& avx512_kernels() {
    static const Kernels k = make_kernels();
    return k;
}

}  // namespace deepkern::cpu::bn
