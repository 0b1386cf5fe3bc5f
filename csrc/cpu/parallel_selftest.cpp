// A stress check of the pool's job protocol (common/parallel.hpp), run by tests/test_runtime.py:
// many short jobs back to back whose chunk counts alternate between a few and many. A worker
// that is descheduled while it looks at one job's claim word and resumes once the next job is
// being published must not claim a chunk of either; so every chunk of every job runs exactly
// once, and has finished when parallel_chunks returns. Counted in memory that outlives every
// job, so a late or duplicate run is seen rather than landing on a dead stack frame.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <thread>

#include "common/parallel.hpp"
#include "cpu/parallel_selftest.hpp"

namespace deepkern::cpu {

int64_t pool_selftest(int64_t jobs, uint64_t seed) {
    if (jobs < 0) throw std::invalid_argument("pool_selftest: jobs must be >= 0");
    constexpr int kMostChunks = 64;
    // runs[j * kMostChunks + i]: how often chunk i of job j ran (value-initialised to 0)
    std::unique_ptr<std::atomic<int>[]> runs(new std::atomic<int>[static_cast<size_t>(jobs) * kMostChunks]());
    std::unique_ptr<int[]> chunks_of(new int[static_cast<size_t>(jobs)]);
    std::mt19937_64 rng(seed);
    int64_t violations = 0;
    for (int64_t j = 0; j < jobs; ++j) {
        // few chunks, then many: a stale claim left over from the small job would land
        // inside the large one's range
        const int chunks = j % 2 == 0 ? 2 + static_cast<int>(rng() % 3) : kMostChunks - static_cast<int>(rng() % 8);
        chunks_of[j] = chunks;
        std::atomic<int>* row = &runs[static_cast<size_t>(j) * kMostChunks];
        const int spin = static_cast<int>(rng() % 200);
        parallel_chunks(chunks, [row, spin](int64_t i) {
            for (volatile int s = 0; s < spin; s = s + 1) {
            }
            row[i].fetch_add(1, std::memory_order_relaxed);
        });
        for (int i = 0; i < chunks; ++i)  // unfinished (returned early) or run twice
            if (row[i].load(std::memory_order_relaxed) != 1) ++violations;
    }
    // a run that started after its job returned shows up here
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (int64_t j = 0; j < jobs; ++j)
        for (int i = 0; i < kMostChunks; ++i) {
            const int want = i < chunks_of[j] ? 1 : 0;
            if (runs[static_cast<size_t>(j) * kMostChunks + i].load(std::memory_order_relaxed) != want) ++violations;
        }
    return violations;
}

}  // namespace deepkern::cpu
