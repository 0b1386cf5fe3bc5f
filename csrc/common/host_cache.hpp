// A cache of large host buffers for kernel outputs.
//
// A training step allocates the same large activations and gradients every iteration. Left to
// malloc, buffers above its mmap threshold go back to the OS when freed and come back as fresh
// pages that fault in (and are zeroed by the kernel) on first touch: measured on the seed CNN at
// batch 128, that page-faulting was ~40% of the step. This cache keeps freed output buffers,
// keyed by size, and hands them out again already faulted in. It only ever holds memory that a
// deepkern output array released, up to a limit (DEEPKERN_HOST_CACHE_MB, default 1024; 0 turns
// caching off); `clear()` returns everything to the OS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
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

    static HostCache& instance() {
        static HostCache* cache = new HostCache();  // never destroyed: arrays may outlive module teardown
        return *cache;
    }

    // Rounded to whole pages so that shapes differing by a few elements share a bucket.
    static size_t bucket(size_t bytes) { return (bytes + 4095) & ~static_cast<size_t>(4095); }

    void* acquire(size_t bytes) {
        const size_t size = bucket(bytes);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = free_.find(size);
            if (it != free_.end() && !it->second.empty()) {
                void* p = it->second.back();
                it->second.pop_back();
                cached_ -= size;
                ++hits_;
                return p;
            }
            ++misses_;
        }
        void* p = std::aligned_alloc(kAlign, size);
        if (p == nullptr) throw std::bad_alloc();
        return p;
    }

    void release(void* p, size_t bytes) {
        const size_t size = bucket(bytes);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (cached_ + size <= limit_) {
                free_[size].push_back(p);
                cached_ += size;
                return;
            }
        }
        std::free(p);
    }

    void clear() {
        std::unordered_map<size_t, std::vector<void*>> drop;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            drop.swap(free_);
            cached_ = 0;
        }
        for (auto& entry : drop)
            for (void* p : entry.second) std::free(p);
    }

    void set_limit(size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            limit_ = bytes;
        }
        if (cached_bytes() > bytes) clear();
    }

    size_t limit() {
        std::lock_guard<std::mutex> lock(mutex_);
        return limit_;
    }
    size_t cached_bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return cached_;
    }
    uint64_t hits() {
        std::lock_guard<std::mutex> lock(mutex_);
        return hits_;
    }
    uint64_t misses() {
        std::lock_guard<std::mutex> lock(mutex_);
        return misses_;
    }

private:
    HostCache() {
        const char* env = std::getenv("DEEPKERN_HOST_CACHE_MB");
        if (env != nullptr && *env != '\0') {
            char* end = nullptr;
            const unsigned long long mb = std::strtoull(env, &end, 10);
            // an unreadable value keeps the default rather than failing the import
            if (end != env && *end == '\0') limit_ = static_cast<size_t>(mb) << 20;
        }
    }

    std::mutex mutex_;
    std::unordered_map<size_t, std::vector<void*>> free_;
    size_t cached_ = 0;
    size_t limit_ = static_cast<size_t>(1024) << 20;
    uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace deepkern
