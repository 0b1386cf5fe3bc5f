// A cache of large host buffers for kernel outputs.
//
// A training step allocates the same large activations and gradients every iteration. Left to
// malloc, buffers above its mmap threshold go back to the OS when freed and come back as fresh
// pages that fault in (and are zeroed by the kernel) on first touch: measured on the seed CNN at
// batch 128, that page-faulting was ~40% of the step. This cache keeps freed output buffers,
// keyed by size, and hands them out again already faulted in. It only ever holds memory that a
// deepkern output array released, up to a limit (DEEPKERN_HOST_CACHE_MB, default 1024; 0 turns
// caching off; a negative or unreadable value keeps the default); `clear()` returns everything
// to the OS.
//
// Eviction, oldest first: when the limit would be passed, and when a buffer has sat unused while
// kMaxIdleMisses requests missed the cache. A training loop's working set is reused every step
// (no misses once warm), so nothing of it ages out; a workload whose sizes keep changing misses
// every time, so its stale buffers go back to the OS instead of piling up to the limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <list>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

namespace deepkern {

class HostCache {
public:
    // Buffers smaller than this come straight from malloc, whose small-block heap recycles them.
    static constexpr size_t kMinBytes = 256 * 1024;
    static constexpr size_t kAlign = 64;  // a cache line; also what AVX-512 loads like best
    // A cached buffer not reused while this many requests missed the cache is freed.
    static constexpr uint64_t kMaxIdleMisses = 64;

    static HostCache& instance() {
        static HostCache* cache = new HostCache();  // never destroyed: arrays may outlive module teardown
        return *cache;
    }

    // Rounded to whole pages so that shapes differing by a few elements share a bucket.
    static size_t bucket(size_t bytes) { return (bytes + 4095) & ~static_cast<size_t>(4095); }

    void* acquire(size_t bytes) {
        const size_t size = bucket(bytes);
        std::vector<void*> drop;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = by_size_.find(size);
            if (it != by_size_.end() && !it->second.empty()) {
                const auto entry = it->second.back();  // the most recently released: warmest
                it->second.pop_back();
                void* p = entry->data;
                lru_.erase(entry);
                cached_ -= size;
                ++hits_;
                return p;
            }
            ++misses_;
            evict(drop);  // stale buffers go before new memory is taken
        }
        for (void* p : drop) std::free(p);
        void* p = std::aligned_alloc(kAlign, size);
        if (p == nullptr) throw std::bad_alloc();
        return p;
    }

    void release(void* p, size_t bytes) {
        const size_t size = bucket(bytes);
        std::vector<void*> drop;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            lru_.push_back(Entry{p, size, misses_});
            by_size_[size].push_back(std::prev(lru_.end()));
            cached_ += size;
            evict(drop);
        }
        for (void* q : drop) std::free(q);
    }

    void clear() {
        std::list<Entry> drop;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            drop.swap(lru_);
            by_size_.clear();
            cached_ = 0;
        }
        for (const Entry& e : drop) std::free(e.data);
    }

    void set_limit(size_t bytes) {
        std::vector<void*> drop;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            limit_ = bytes;
            evict(drop);
        }
        for (void* p : drop) std::free(p);
    }

    size_t limit() {
        std::lock_guard<std::mutex> lock(mutex_);
        return limit_;
    }
    size_t cached_bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return cached_;
    }
    size_t cached_buffers() {
        std::lock_guard<std::mutex> lock(mutex_);
        return lru_.size();
    }
    uint64_t hits() {
        std::lock_guard<std::mutex> lock(mutex_);
        return hits_;
    }
    uint64_t misses() {
        std::lock_guard<std::mutex> lock(mutex_);
        return misses_;
    }

    // DEEPKERN_HOST_CACHE_MB as bytes: digits only (so "-1" is not read as 2**64 - 1), capped so
    // the shift cannot overflow; anything else keeps `fallback`.
    static size_t parse_limit_mb(const char* env, size_t fallback) {
        if (env == nullptr || *env < '0' || *env > '9') return fallback;
        char* end = nullptr;
        const unsigned long long mb = std::strtoull(env, &end, 10);
        if (*end != '\0') return fallback;
        const unsigned long long max_mb = std::numeric_limits<size_t>::max() >> 20;
        return static_cast<size_t>(mb < max_mb ? mb : max_mb) << 20;
    }

private:
    struct Entry {
        void* data;
        size_t size;
        uint64_t missed_at;  // misses_ when the buffer was released
    };

    HostCache() { limit_ = parse_limit_mb(std::getenv("DEEPKERN_HOST_CACHE_MB"), limit_); }

    // With the lock held: unlink the oldest buffers while the cache is over its limit or they
    // have idled kMaxIdleMisses misses; the caller frees them after unlocking.
    void evict(std::vector<void*>& drop) {
        while (!lru_.empty()) {
            const Entry& oldest = lru_.front();
            if (cached_ <= limit_ && misses_ - oldest.missed_at < kMaxIdleMisses) break;
            auto& same = by_size_[oldest.size];  // the oldest of its size: the front of its list
            same.erase(same.begin());
            if (same.empty()) by_size_.erase(oldest.size);
            cached_ -= oldest.size;
            drop.push_back(oldest.data);
            lru_.pop_front();
        }
    }

    std::mutex mutex_;
    std::list<Entry> lru_;  // cached buffers, oldest release first
    std::unordered_map<size_t, std::vector<std::list<Entry>::iterator>> by_size_;  // each oldest first
    size_t cached_ = 0;
    size_t limit_ = static_cast<size_t>(1024) << 20;
    uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace deepkern
