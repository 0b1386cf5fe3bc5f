// Batch-norm run loops compiled for AVX2 + FMA (4 doubles / 8 floats a vector); selected at run time by batchnorm.cpp.
#include "cpu/batchnorm_runs.hpp"

namespace deepkern::cpu::bn {

const Kernels& avx2_kernels() {
    static const Kernels k = make_kernels();
    return k;
}

}  // namespace deepkern::cpu::bn
