// OpenMP helpers: how many threads, and whether a loop is worth splitting.
#pragma once
#include <cstdint>
#include <omp.h>

namespace deepkern {

inline int max_threads() { return omp_get_max_threads(); }

// Below this many elements of work a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

inline bool worth_parallel(int64_t work) { return work >= kParallelGrain && omp_get_max_threads() > 1; }

// f(begin, end) over [0, total), one contiguous piece per thread, or f(0, total) on the calling
// thread (no OpenMP region at all) when `work` is below the grain. Piece boundaries are
// multiples of `align` (e.g. 16 floats: whole cache lines of output per thread). Unlike
// `parallel for simd if(...)`, whose if clause also switches the simd loop off, the loop
// inside f stays vectorised either way.
template <class F>
void parallel_ranges(int64_t total, int64_t work, int64_t align, F&& f) {
    if (!worth_parallel(work)) {
        f(int64_t{0}, total);
        return;
    }
#pragma omp parallel
    {
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t b = total * t / nt, e = total * (t + 1) / nt;
        b = t == 0 ? 0 : b / align * align;
        e = t == nt - 1 ? total : e / align * align;
        if (b < e) f(b, e);
    }
}

}  // namespace deepkern
