// OpenMP helpers: how many threads, and whether a loop is worth splitting.
#pragma once
#include <cstdint>
#include <omp.h>

namespace deepkern {

inline int max_threads() { return omp_get_max_threads(); }

// Below this many elements of work a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

inline bool worth_parallel(int64_t work) { return work >= kParallelGrain && omp_get_max_threads() > 1; }

}  // namespace deepkern
