// CPU emulation of the CUDA runtime and built-ins, for running csrc/cuda/*.cu as C++ (a test tool).
//
// Model: a launch runs its blocks one after another; every CUDA thread of a block is an OS thread
// (they stay alive for the whole launch and step through the blocks together). threadIdx/blockIdx/
// blockDim/gridDim are thread-locals, __shared__ variables are function statics (one block runs at
// a time, so that is per-block memory), __syncthreads is a barrier over the block's threads that
// have not returned, warp shuffles and votes exchange values through a per-warp slot array between
// two warp barriers. Misuse that a GPU would not report (divergent barriers, a shuffle with exited
// lanes, a bad launch configuration) aborts or sets the launch error, so tests see it.
// Launches `k<<<g, b, s, st>>>(args)` are rewritten by tests/cuda_emu/build.py into
// `::cuda_emu::launch(g, b, s, st).with(k)(args)`.
#pragma once

#include <atomic>
#include <math.h>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

// ------------------------------------------------------------------ qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 800  // the kernels' sm_80 paths (TF32 wmma) are emulated too
#endif

// ------------------------------------------------------------------ vector types
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// ------------------------------------------------------------------ runtime API subset
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9,
                   cudaErrorLaunchFailure = 719 };
using cudaStream_t = struct CUstream_st*;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrComputeCapabilityMajor = 75 };
struct cudaFuncAttributes { int maxThreadsPerBlock; };

namespace cuda_emu {

struct Device {
    int sms = 132, major = 9;
    cudaError_t last_error = cudaSuccess;
    int64_t keep_first = -1, keep_last = -1;  // >= 0: run only these many first / last blocks
    int64_t launch_budget = -1;               // >= 0: launches still run; later ones are skipped
    int64_t launches = 0, blocks_run = 0;
};
inline Device& device() {
    static Device d;
    return d;
}

[[noreturn]] inline void fail(const char* what, const char* file, int line) {
    std::fprintf(stderr, "cuda_emu: %s (%s:%d)\n", what, file, line);
    std::fflush(stderr);
    std::abort();
}

}  // namespace cuda_emu

inline cudaError_t cudaGetLastError() {
    cudaError_t e = cuda_emu::device().last_error;
    cuda_emu::device().last_error = cudaSuccess;
    return e;
}
inline const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        default: return "cudaErrorLaunchFailure";
    }
}
inline const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
    *v = a == cudaDevAttrMultiProcessorCount ? cuda_emu::device().sms : cuda_emu::device().major;
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
    std::memset(p, value, bytes);
    return cudaSuccess;
}
template <class F>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, F*) {
    a->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}

// ------------------------------------------------------------------ math built-ins
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __frcp_rn(float a) { return 1.f / a; }
inline float rsqrtf(float a) { return 1.f / std::sqrt(a); }
inline float __frsqrt_rn(float a) { return 1.f / std::sqrt(a); }
inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
constexpr int warpSize = 32;
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
template <class A, class B>
inline auto min(A a, B b) -> std::common_type_t<A, B> { return a < b ? a : b; }
template <class A, class B>
inline auto max(A a, B b) -> std::common_type_t<A, B> { return a < b ? b : a; }

template <class T>
inline T __ldg(const T* p) {
    if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) cuda_emu::fail("misaligned __ldg", __FILE__, __LINE__);
    return *p;
}

inline float atomicAdd(float* p, float v) {
    // a CAS loop on the float's bits: seen by ThreadSanitizer as an atomic read-modify-write
    auto* bits = reinterpret_cast<uint32_t*>(p);
    uint32_t old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
        float f;
        std::memcpy(&f, &old, 4);
        f += v;
        uint32_t nw;
        std::memcpy(&nw, &f, 4);
        if (__atomic_compare_exchange_n(bits, &old, nw, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            std::memcpy(&f, &old, 4);
            return f;
        }
    }
}
inline double atomicAdd(double* p, double v) {
    auto* bits = reinterpret_cast<uint64_t*>(p);
    uint64_t old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
        double d;
        std::memcpy(&d, &old, 8);
        d += v;
        uint64_t nw;
        std::memcpy(&nw, &d, 8);
        if (__atomic_compare_exchange_n(bits, &old, nw, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            std::memcpy(&d, &old, 8);
            return d;
        }
    }
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
template <class Keep>
inline int atomic_pick(int* p, int v, Keep keep) {  // CAS loop: GCC 12 has no __atomic_fetch_max
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (keep(v, old) && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicMax(int* p, int v) { return atomic_pick(p, v, [](int a, int b) { return a > b; }); }
inline int atomicMin(int* p, int v) { return atomic_pick(p, v, [](int a, int b) { return a < b; }); }
inline int atomicCAS(int* p, int cmp, int v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

// ------------------------------------------------------------------ thread identity
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

namespace cuda_emu {

// A barrier whose party count shrinks when a thread leaves (a returned CUDA thread no longer
// counts at __syncthreads). Every arrival of one phase must come from the same call site.
class Barrier {
public:
    void reset(int parties) {
        std::lock_guard<std::mutex> lk(mu_);
        parties_ = parties;
        arrived_ = 0;
    }
    int parties() {
        std::lock_guard<std::mutex> lk(mu_);
        return parties_;
    }
    void wait(int site, const char* file, int line) {
        std::unique_lock<std::mutex> lk(mu_);
        if (arrived_ == 0) site_ = site;
        else if (site != site_) fail("threads of one block/warp wait at different barriers (divergent sync)", file, line);
        const uint64_t gen = gen_;
        if (++arrived_ == parties_) {
            advance();
        } else {
            cv_.wait(lk, [&] { return gen_ != gen; });
        }
    }
    void leave() {
        std::lock_guard<std::mutex> lk(mu_);
        --parties_;
        if (arrived_ > 0 && arrived_ == parties_) advance();
    }

private:
    void advance() {
        arrived_ = 0;
        ++gen_;
        cv_.notify_all();
    }
    std::mutex mu_;
    std::condition_variable cv_;
    int parties_ = 0, arrived_ = 0, site_ = 0;
    uint64_t gen_ = 0;
};

struct Warp {
    Barrier bar;
    uint64_t slot[32];
    int lanes = 32;  // lanes that exist in this warp (the block's last warp may be partial)
};

struct Block {
    Barrier bar;       // __syncthreads
    Barrier step;      // between blocks: every thread, returned or not
    Warp* warps = nullptr;
    unsigned char* dynamic_shared = nullptr;  // the launch's dynamic shared memory (extern __shared__)
};

inline thread_local Block* tl_block = nullptr;
inline thread_local int tl_lane = 0, tl_warp = 0;

inline Warp& my_warp() { return tl_block->warps[tl_warp]; }

// Exchanges one 64-bit value per lane; returns lane src's value. Every lane of the warp must take part.
inline uint64_t warp_exchange(unsigned mask, uint64_t v, int src, const char* file, int line) {
    Warp& w = my_warp();
    if (mask != 0xffffffffu) fail("only full-warp masks are emulated", file, line);
    if (w.bar.parties() != 32 || w.lanes != 32)
        fail("warp collective with a full mask while lanes of the warp have exited", file, line);
    w.slot[tl_lane] = v;
    w.bar.wait(line, file, line);
    const uint64_t r = w.slot[src & 31];
    w.bar.wait(line + 1000000, file, line);
    return r;
}

template <class T>
inline T shfl_xor(unsigned mask, T v, int off, const char* file, int line) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warp_exchange(mask, bits, tl_lane ^ off, file, line);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}

// Ballot: each lane publishes its predicate, then reads all 32.
inline unsigned ballot(unsigned mask, int pred, const char* file, int line) {
    Warp& w = my_warp();
    if (mask != 0xffffffffu || w.bar.parties() != 32) fail("warp vote needs all 32 lanes", file, line);
    w.slot[tl_lane] = pred != 0;
    w.bar.wait(line, file, line);
    unsigned bits = 0;
    for (int i = 0; i < 32; ++i) bits |= static_cast<unsigned>(w.slot[i] != 0) << i;
    w.bar.wait(line + 1000000, file, line);
    return bits;
}

// `extern __shared__ T name[];` is rewritten by build.py to `T* name = dynamic_shared<T>();`
template <class T>
inline T* dynamic_shared() {
    return reinterpret_cast<T*>(tl_block->dynamic_shared);
}

// Runs body for each kept block of the grid; nthreads OS threads, one per CUDA thread.
void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body);

struct Launch {
    dim3 grid, block;
    size_t shared_bytes;
    template <class... P>
    struct Bound {
        void (*kernel)(P...);
        dim3 grid, block;
        size_t shared_bytes;
        template <class... A>
        void operator()(A&&... a) const {
            // each CUDA thread gets its own copy of the parameters, converted as a call would
            std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
            auto k = kernel;
            run_grid(grid, block, shared_bytes, [k, &args] {
                auto mine = args;
                std::apply(k, mine);
            });
        }
    };
    template <class... P>
    Bound<P...> with(void (*k)(P...)) const {
        return Bound<P...>{k, grid, block, shared_bytes};
    }
};

inline Launch launch(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t = nullptr) {
    return Launch{grid, block, shared_bytes};
}

}  // namespace cuda_emu

#define __syncthreads() ::cuda_emu::tl_block->bar.wait(__LINE__, __FILE__, __LINE__)
#define __syncwarp(...) ::cuda_emu::my_warp().bar.wait(__LINE__, __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, off) ::cuda_emu::shfl_xor((mask), (v), (off), __FILE__, __LINE__)
#define __shfl_sync(mask, v, src) ::cuda_emu::shfl_from((mask), (v), (src), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d) \
    ::cuda_emu::shfl_from((mask), (v), ::cuda_emu::tl_lane + (d) < 32 ? ::cuda_emu::tl_lane + (d) : ::cuda_emu::tl_lane, \
                          __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d) \
    ::cuda_emu::shfl_from((mask), (v), ::cuda_emu::tl_lane >= (d) ? ::cuda_emu::tl_lane - (d) : ::cuda_emu::tl_lane, \
                          __FILE__, __LINE__)
#define __ballot_sync(mask, pred) ::cuda_emu::ballot((mask), (pred), __FILE__, __LINE__)
#define __any_sync(mask, pred) (::cuda_emu::ballot((mask), (pred), __FILE__, __LINE__) != 0u)
#define __all_sync(mask, pred) (::cuda_emu::ballot((mask), (pred), __FILE__, __LINE__) == 0xffffffffu)

namespace cuda_emu {
template <class T>
inline T shfl_from(unsigned mask, T v, int src, const char* file, int line) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warp_exchange(mask, bits, src, file, line);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
}  // namespace cuda_emu
