// Shared by every CUDA op family: error checking that throws (never aborts), launch helpers.
// Included from .cu files and from bind_cuda.cpp (host-only parts), so it needs only the runtime API.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace deepkern::cuda {

// A failed CUDA call or launch; pybind11 turns it into a Python RuntimeError.
struct CudaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
    if (err == cudaSuccess) return;
    // Clear a non-sticky error so the next call starts clean (sticky ones stay, as they must).
    cudaGetLastError();
    throw CudaError(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                    "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

}  // namespace deepkern::cuda

// Every runtime call goes through CUDA_CHECK; every kernel launch is followed by CUDA_CHECK_LAUNCH.
#define CUDA_CHECK(call) ::deepkern::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define CUDA_CHECK_LAUNCH(name) ::deepkern::cuda::check_cuda(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)

namespace deepkern::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride elementwise kernel over n items: enough to fill any GPU, never above the limit.
inline unsigned elementwise_blocks(int64_t n, int threads) {
    int64_t blocks = ceil_div(n, threads);
    const int64_t cap = 65535LL * 8;
    if (blocks > cap) blocks = cap;
    if (blocks < 1) blocks = 1;
    return static_cast<unsigned>(blocks);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace deepkern::cuda
