// The thread pool behind common/parallel.hpp: std::thread workers, one job at a time, chunks
// claimed from an atomic counter, futex sleeps.
//
// Why our own pool and not OpenMP or oneTBB: OpenMP's regions end at a barrier, so on a busy
// machine the caller sleeps until every team thread, descheduled or not, has run its share
// (benchmarks/RESULTS.md: the seed MLP at 0.17x of one thread with 3 busy processes); libgomp's
// pool also hangs in a forked child. oneTBB's work stealing would avoid the barrier but adds a
// runtime library to ship and load, and its own fork and thread-limit rules. The kernels need
// only "run these chunks, caller included", which this file does in ~250 lines.
//
// A job: the caller publishes (fn, ctx, chunk count) under a new epoch, wakes sleeping workers,
// then claims chunks itself. The claim word packs (epoch << 32 | next chunk), so a worker that
// wakes late, after its job has ended, fails its compare-exchange and touches nothing (it never
// runs a chunk of a job whose context is gone); the word is closed before the next job's fields
// are written, so such a worker cannot mix the old claim word with the new fields either. The caller waits only until `done` counts every
// chunk: chunks nobody claimed it has run itself, so it waits only for chunks that running
// workers hold.
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/parallel.hpp"

namespace deepkern {
namespace {

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr, nullptr, 0);
}

using Clock = std::chrono::steady_clock;

// How long an idle worker keeps polling for the next job before it sleeps, and how long the
// caller polls for the last held chunks before it sleeps. Back-to-back kernels of a training
// step (separated by some microseconds of Python) then find the workers awake; a busy machine
// loses little to the polling. DEEPKERN_SPIN_US overrides (0: sleep at once).
int64_t us_from_env(const char* name, int64_t fallback_us) {
    const char* env = std::getenv(name);
    if (env != nullptr && *env != '\0') return std::max<int64_t>(0, std::atoll(env)) * 1000;
    return fallback_us * 1000;
}
const int64_t kSpinNs = us_from_env("DEEPKERN_SPIN_US", 50);

// After its polling an idle worker keeps watching for the next job this long (from the end of its
// last one), giving up its core at every look (sched_yield) before it sleeps on the futex. A vCPU
// whose thread sleeps is halted, and waking it took longer than a training step's products
// (measured: the seed MLP's 2-thread step 1.70-1.74 ms with the workers asleep at ~4 of its 8
// parallel calls, 0.92 ms when they stayed awake), while a step's gaps between parallel calls
// reach ~200 us. The yield keeps the core for anyone else who wants it, so a busy machine loses
// little. DEEPKERN_YIELD_US overrides (0: sleep right after the polling).
const int64_t kYieldNs = us_from_env("DEEPKERN_YIELD_US", 1000);

// A worker can still be descheduled in the middle of a chunk it holds; then the caller waits a
// scheduler slice for it. When that happens (the caller waited much longer than it worked), the
// next calls run on the caller alone, 32 of them at first, twice as many after each further
// stall (up to 1024), back to 32 after a parallel call without one. On a quiet machine nothing
// stalls and nothing changes; on an oversubscribed one the kernels settle near the
// single-thread speed instead of below it. DEEPKERN_STALL_BACKOFF=0 turns this off.
bool backoff_from_env() {
    const char* env = std::getenv("DEEPKERN_STALL_BACKOFF");
    return env == nullptr || std::strcmp(env, "0") != 0;
}
const bool kStallBackoff = backoff_from_env();
constexpr int kBackoffFirst = 32, kBackoffMost = 1024;
constexpr int64_t kStallSlackNs = 200 * 1000;

thread_local bool t_in_parallel = false;

struct InParallel {  // marks this thread as running chunks for the scope
    bool saved = t_in_parallel;
    InParallel() { t_in_parallel = true; }
    ~InParallel() { t_in_parallel = saved; }
};

class Pool {
   public:
    // Runs the job, or returns false at once when another thread's job holds the pool or the
    // pool is backing off after a stall.
    bool try_run(int64_t chunks, detail::ChunkFn fn, void* ctx, int threads) {
        if (skip_.load(std::memory_order_relaxed) > 0) {
            skip_.fetch_sub(1, std::memory_order_relaxed);
            return false;
        }
        if (busy_.exchange(true, std::memory_order_acquire)) return false;
        struct Release {
            std::atomic<bool>& busy;
            ~Release() { busy.store(false, std::memory_order_release); }
        } release{busy_};
        start_workers(threads - 1);
        const int limit = static_cast<int>(std::min<int64_t>(std::min(threads, workers_ + 1), chunks));
        const uint32_t e = epoch_.load(std::memory_order_relaxed) + 1;
        // Close the last job's claim word before its fields change. Otherwise a worker that read
        // it (every chunk taken) and then, after a preemption, the new job's larger chunk count
        // would win its compare-exchange on the unchanged word: it would run a chunk of the new
        // job that someone runs again, and count it in the new job's `done`, so the caller could
        // return while a chunk still runs on its stack frame (the flaky crash this fixed).
        claim_.store(static_cast<uint64_t>(e) << 32 | kClosed, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        fn_.store(fn, std::memory_order_relaxed);
        ctx_.store(ctx, std::memory_order_relaxed);
        n_.store(chunks, std::memory_order_relaxed);
        limit_.store(limit, std::memory_order_relaxed);
        done_.store(0, std::memory_order_relaxed);
        failed_.store(false, std::memory_order_relaxed);
        error_ = nullptr;
        claim_.store(static_cast<uint64_t>(e) << 32, std::memory_order_release);
        epoch_.store(e, std::memory_order_seq_cst);
        // a futex wakes any sleepers: when some workers are not to take part (fewer threads
        // than workers, after set_num_threads lowered the count), wake them all
        if (sleepers_.load(std::memory_order_seq_cst) > 0)
            futex_wake(&epoch_, workers_ + 1 > limit ? workers_ : limit - 1);
        const auto start = Clock::now();
        {
            InParallel mark;
            participate(e, 0);
        }
        const auto claimed = Clock::now();
        wait_done(static_cast<uint32_t>(chunks));
        note_wait(claimed - start, Clock::now() - claimed);
        if (error_) std::rethrow_exception(error_);
        return true;
    }

   private:
    // Claim index of a job being published: no chunk has this index (chunks < 2**31).
    static constexpr uint64_t kClosed = 0xffffffffu;

    // Claims and runs chunks of job `e` until none is left (or the job is another one).
    void participate(uint32_t e, int index) {
        for (;;) {
            uint64_t w = claim_.load(std::memory_order_acquire);
            if (static_cast<uint32_t>(w >> 32) != e) return;
            const int64_t i = static_cast<int64_t>(w & 0xffffffffu);
            // read before the claim; a successful claim proves they belong to job e
            const int64_t n = n_.load(std::memory_order_relaxed);
            const int limit = limit_.load(std::memory_order_relaxed);
            const detail::ChunkFn fn = fn_.load(std::memory_order_relaxed);
            void* ctx = ctx_.load(std::memory_order_relaxed);
            if (i >= n || index >= limit) return;
            // pairs with the release fence in try_run: if any field above came from a newer job,
            // that job's closing store is visible to the compare-exchange, which then fails
            std::atomic_thread_fence(std::memory_order_acquire);
            if (!claim_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire))
                continue;
            if (!failed_.load(std::memory_order_relaxed)) {
                try {
                    fn(ctx, i);
                } catch (...) {
                    std::lock_guard<std::mutex> lock(error_mu_);
                    if (!error_) error_ = std::current_exception();
                    failed_.store(true, std::memory_order_relaxed);
                }
            }
            const uint32_t d = done_.fetch_add(1, std::memory_order_seq_cst) + 1;
            if (d == static_cast<uint32_t>(n) && caller_sleeping_.load(std::memory_order_seq_cst))
                futex_wake(&done_, 1);
        }
    }

    void wait_done(uint32_t n) {
        const auto until = Clock::now() + std::chrono::nanoseconds(kSpinNs);
        while (done_.load(std::memory_order_acquire) != n) {
            if (Clock::now() < until) {
                _mm_pause();
                continue;
            }
            caller_sleeping_.store(true, std::memory_order_seq_cst);
            uint32_t d;
            while ((d = done_.load(std::memory_order_seq_cst)) != n) futex_wait(&done_, d);
            caller_sleeping_.store(false, std::memory_order_relaxed);
        }
        std::atomic_thread_fence(std::memory_order_acquire);
    }

    // Called by the busy holder after each job: the caller worked `own`, then waited `wait`.
    void note_wait(Clock::duration own, Clock::duration wait) {
        if (!kStallBackoff) return;
        if (wait > 2 * own + std::chrono::nanoseconds(kStallSlackNs)) {
            skip_.store(backoff_, std::memory_order_relaxed);
            backoff_ = std::min(2 * backoff_, kBackoffMost);
        } else {
            backoff_ = kBackoffFirst;
        }
    }

    void worker_loop(int index, uint32_t seen) {
        t_in_parallel = true;  // a worker's nested parallel calls run serially
        for (;;) {
            uint32_t e = epoch_.load(std::memory_order_acquire);
            if (e == seen) {
                const auto until = Clock::now() + std::chrono::nanoseconds(kSpinNs);
                while ((e = epoch_.load(std::memory_order_acquire)) == seen && Clock::now() < until) _mm_pause();
                const auto yield_until = until + std::chrono::nanoseconds(kYieldNs);
                while (e == seen && Clock::now() < yield_until) {
                    sched_yield();
                    e = epoch_.load(std::memory_order_acquire);
                }
                if (e == seen) {
                    sleepers_.fetch_add(1, std::memory_order_seq_cst);
                    futex_wait(&epoch_, seen);
                    sleepers_.fetch_sub(1, std::memory_order_relaxed);
                    continue;
                }
            }
            seen = e;
            participate(e, index);
        }
    }

    // Workers 1..want, started on first need; they never exit (the pool lives for the process).
    void start_workers(int want) {
        while (workers_ < want) {
            const int index = workers_ + 1;
            const uint32_t seen = epoch_.load(std::memory_order_relaxed);
            try {
                std::thread([this, index, seen] { worker_loop(index, seen); }).detach();
            } catch (const std::system_error&) {
                return;  // no more threads: run with those there are
            }
            workers_ = index;
        }
    }

    std::atomic<bool> busy_{false};
    int workers_ = 0;                     // started; touched only by the busy holder
    int backoff_ = kBackoffFirst;         // calls to skip at the next stall; busy holder only
    std::atomic<int> skip_{0};            // calls left to run on the caller alone
    std::atomic<uint32_t> epoch_{0};      // job number; the workers' futex word
    std::atomic<uint64_t> claim_{0};      // epoch << 32 | next unclaimed chunk
    std::atomic<detail::ChunkFn> fn_{nullptr};
    std::atomic<void*> ctx_{nullptr};
    std::atomic<int64_t> n_{0};
    std::atomic<int> limit_{0};           // workers with index < limit take part
    std::atomic<uint32_t> done_{0};       // finished chunks; the caller's futex word
    std::atomic<bool> caller_sleeping_{false};
    std::atomic<int> sleepers_{0};
    std::atomic<bool> failed_{false};
    std::mutex error_mu_;
    std::exception_ptr error_;
};

// The pool is created on first use and never destroyed: its detached workers may still be
// polling when static destructors run. A forked child has none of the parent's threads; it drops
// the parent's pool (leaked) and starts a fresh one on its first parallel call.
std::atomic<Pool*> g_pool{nullptr};

Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (p != nullptr) return *p;
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread made one first
    return *p;
}

// Threads from DEEPKERN_NUM_THREADS, else OMP_NUM_THREADS (its first entry), else the CPUs this
// process may run on.
int threads_from_env() {
    for (const char* name : {"DEEPKERN_NUM_THREADS", "OMP_NUM_THREADS"}) {
        const char* env = std::getenv(name);
        if (env == nullptr || *env == '\0') continue;
        const int n = std::atoi(env);
        if (n >= 1) return n;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::atomic<int> g_threads{threads_from_env()};

void after_fork_in_child() {
    g_pool.store(nullptr, std::memory_order_relaxed);
    t_in_parallel = false;
}

[[maybe_unused]] const int kAtFork = pthread_atfork(nullptr, nullptr, after_fork_in_child);

}  // namespace

int max_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_max_threads(int n) {
    if (n < 1) throw std::invalid_argument("set_num_threads: expected a positive count, got " + std::to_string(n));
    g_threads.store(n, std::memory_order_relaxed);
}

bool in_parallel() { return t_in_parallel; }

const char* runtime_name() { return "deepkern-pool"; }

namespace detail {

void run_chunks(int64_t chunks, ChunkFn fn, void* ctx) {
    if (chunks <= 0) return;
    if (chunks >= (int64_t{1} << 31)) throw std::length_error("parallel_chunks: too many chunks");
    const int threads = max_threads();
    if (chunks == 1 || threads <= 1 || t_in_parallel || !pool().try_run(chunks, fn, ctx, threads)) {
        InParallel mark;
        for (int64_t i = 0; i < chunks; ++i) fn(ctx, i);
    }
}

}  // namespace detail
}  // namespace deepkern

// For threadpoolctl (python/deepkern/_threads.py registers a controller that calls these).
extern "C" __attribute__((visibility("default"))) int deepkern_get_num_threads() { return deepkern::max_threads(); }

extern "C" __attribute__((visibility("default"))) void deepkern_set_num_threads(int n) {
    deepkern::set_max_threads(std::max(1, n));
}
