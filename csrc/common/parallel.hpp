// The CPU kernels' one parallel interface (implemented in cpu/parallel_runtime.cpp).
//
// Work is cut into chunks that the calling thread and the pool's workers claim one at a time
// from a shared counter. The caller claims chunks too and, once none are left, waits only for
// chunks that running workers already hold: a worker that has not started (descheduled because
// other processes share the cores) never holds anything up, it simply finds no work left. So a
// kernel on a busy machine degrades to the caller doing most chunks, never to the caller
// sleeping for a scheduler slice at a barrier (OpenMP's failure mode).
//
// Rules for kernels:
//  - parallel_chunks(n, f) calls f(i) once for each chunk i in [0, n), on any thread, in any
//    order. A reduction that must come out the same on every run writes per-chunk partials and
//    adds them in chunk order afterwards, with a chunk count that depends on the problem only
//    (never on the thread count): then the result is bit-identical for any number of threads.
//  - Inside a chunk (and on a second Python thread while another one uses the pool) parallel
//    calls run serially on the current thread, so kernels can nest freely.
//  - Small work stays on the caller: nothing is woken below the grains (worth_parallel).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace deepkern {

// Threads the kernels may use (the caller included): >= 1.
int max_threads();
// Sets it (n >= 1); takes effect at the next parallel call. Workers start lazily.
void set_max_threads(int n);
// True inside a chunk, where parallel calls run serially.
bool in_parallel();
// "deepkern-pool" (own std::thread pool with futex wake-ups).
const char* runtime_name();

namespace detail {
using ChunkFn = void (*)(void* ctx, int64_t chunk);
// Runs fn(ctx, i) for i in [0, chunks) on the caller and the pool; rethrows the first
// exception a chunk threw (the remaining chunks are skipped).
void run_chunks(int64_t chunks, ChunkFn fn, void* ctx);
}  // namespace detail

// Whether a parallel call from this thread could use more than one thread.
inline bool can_parallel() { return max_threads() > 1 && !in_parallel(); }

template <class F>
void parallel_chunks(int64_t chunks, F&& f) {
    if (chunks <= 0) return;
    if (chunks == 1 || !can_parallel()) {
        for (int64_t i = 0; i < chunks; ++i) f(i);
        return;
    }
    using Fn = std::remove_reference_t<F>;
    detail::run_chunks(chunks, [](void* ctx, int64_t i) { (*static_cast<Fn*>(ctx))(i); },
                       const_cast<void*>(static_cast<const void*>(&f)));
}

// Chunks handed to each thread at most: enough that a worker that loses its core to another
// process delays a small share of the work, few enough that claiming costs nothing.
constexpr int64_t kChunksPerThread = 4;

// f(b, e) over [begin, end) in pieces of at least `grain` items (the last may be shorter) whose
// boundaries (but the ends) are multiples of `align` from begin; one call f(begin, end) on the
// caller when the range is below two grains.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f, int64_t align = 1) {
    const int64_t n = end - begin;
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    if (n < 2 * grain || !can_parallel()) {
        f(begin, end);
        return;
    }
    const int64_t pieces = std::min(n / grain, kChunksPerThread * max_threads());
    parallel_chunks(pieces, [&](int64_t i) {
        int64_t b = n * i / pieces, e = n * (i + 1) / pieces;
        b = i == 0 ? 0 : b / align * align;
        e = i == pieces - 1 ? n : e / align * align;
        if (b < e) f(begin + b, begin + e);
    });
}

// Below this many elements of work a parallel call costs more than it saves (measured: see
// benchmarks/RESULTS.md, "Runtime under contention").
constexpr int64_t kParallelGrain = 1 << 15;

inline bool worth_parallel(int64_t work) { return work >= kParallelGrain && can_parallel(); }

// f(begin, end) over [0, total) in dynamically claimed pieces, or f(0, total) on the calling
// thread when `work` (elements touched) is below the grain. Piece boundaries are multiples of
// `align` (e.g. 16 floats: whole cache lines of output per piece).
template <class F>
void parallel_ranges(int64_t total, int64_t work, int64_t align, F&& f) {
    if (total <= 0) return;
    if (!worth_parallel(work)) {
        f(int64_t{0}, total);
        return;
    }
    // a piece per half grain of work (so work at the grain makes two), at least one aligned block
    const int64_t per = std::max<int64_t>(align, total * (kParallelGrain / 2) / work);
    parallel_for(0, total, per, f, align);
}

}  // namespace deepkern
