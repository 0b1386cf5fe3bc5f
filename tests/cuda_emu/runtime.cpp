// The emulator's launch loop: one OS thread per CUDA thread, the grid's blocks one after another.
#include <pthread.h>

#include <climits>
#include <stdexcept>
#include <vector>

#include "cuda_runtime.h"

namespace cuda_emu {
namespace {

struct Grid {
    dim3 grid, block;
    const std::function<void()>* body;
    std::vector<uint3> blocks;  // the block indices this launch runs, in order
    Block blk;
    std::vector<Warp> warps;
    int nthreads = 0;
};

struct Arg {
    Grid* g;
    int t;
};

void reset_block(Grid& g) {
    g.blk.bar.reset(g.nthreads);
    for (size_t w = 0; w < g.warps.size(); ++w) {
        const int lanes = std::min(32, g.nthreads - static_cast<int>(w) * 32);
        g.warps[w].lanes = lanes;
        g.warps[w].bar.reset(lanes);
    }
}

void* thread_main(void* p) {
    Arg a = *static_cast<Arg*>(p);
    Grid& g = *a.g;
    const unsigned t = static_cast<unsigned>(a.t);
    threadIdx = uint3{t % g.block.x, (t / g.block.x) % g.block.y, t / (g.block.x * g.block.y)};
    blockDim = g.block;
    gridDim = g.grid;
    tl_block = &g.blk;
    tl_warp = a.t / 32;
    tl_lane = a.t % 32;
    for (const uint3& b : g.blocks) {
        blockIdx = b;
        (*g.body)();
        // a returned thread no longer counts at barriers of its block or warp
        g.blk.bar.leave();
        my_warp().bar.leave();
        g.blk.step.wait(-1, __FILE__, __LINE__);
        if (a.t == 0) reset_block(g);
        g.blk.step.wait(-2, __FILE__, __LINE__);
    }
    return nullptr;
}

}  // namespace

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
    Device& d = device();
    ++d.launches;
    const int64_t nthreads = static_cast<int64_t>(block.x) * block.y * block.z;
    // the limits every GPU since sm_30 enforces; a real launch fails with this error
    if (nthreads < 1 || nthreads > 1024 || block.z > 64 || shared_bytes > 227 * 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
        grid.x > static_cast<unsigned>(INT_MAX) || grid.y > 65535 || grid.z > 65535) {
        d.last_error = cudaErrorInvalidConfiguration;
        return;
    }
    if (d.launch_budget == 0) return;  // a test skips the launches it does not check (huge shapes)
    if (d.launch_budget > 0) --d.launch_budget;
    Grid g;
    g.grid = grid;
    g.block = block;
    g.body = &body;
    g.nthreads = static_cast<int>(nthreads);
    const int64_t total = static_cast<int64_t>(grid.x) * grid.y * grid.z;
    for (int64_t i = 0; i < total; ++i) {
        const bool keep = (d.keep_first < 0 && d.keep_last < 0) || i < d.keep_first || i >= total - d.keep_last;
        if (!keep) continue;
        g.blocks.push_back(uint3{static_cast<unsigned>(i % grid.x), static_cast<unsigned>((i / grid.x) % grid.y),
                                 static_cast<unsigned>(i / (static_cast<int64_t>(grid.x) * grid.y))});
    }
    d.blocks_run += static_cast<int64_t>(g.blocks.size());
    g.warps = std::vector<Warp>(static_cast<size_t>((nthreads + 31) / 32));
    g.blk.warps = g.warps.data();
    std::vector<float4> dynamic_shared((shared_bytes + sizeof(float4) - 1) / sizeof(float4));  // 16-byte aligned
    g.blk.dynamic_shared = reinterpret_cast<unsigned char*>(dynamic_shared.data());
    reset_block(g);
    g.blk.step.reset(g.nthreads);

    std::vector<pthread_t> threads(static_cast<size_t>(nthreads));
    std::vector<Arg> args(static_cast<size_t>(nthreads));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1u << 20);
    for (int t = 0; t < g.nthreads; ++t) {
        args[static_cast<size_t>(t)] = Arg{&g, t};
        if (pthread_create(&threads[static_cast<size_t>(t)], &attr, thread_main, &args[static_cast<size_t>(t)]) != 0)
            fail("pthread_create failed", __FILE__, __LINE__);
    }
    pthread_attr_destroy(&attr);
    for (pthread_t& th : threads) pthread_join(th, nullptr);
}

}  // namespace cuda_emu
