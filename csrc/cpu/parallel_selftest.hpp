// Stress check of the thread pool's job protocol, exposed to the tests (see parallel_selftest.cpp).
#pragma once
#include <cstdint>

namespace deepkern::cpu {
// Runs `jobs` short jobs back to back on the pool; returns how many chunks ran other than exactly
// once or had not finished when their job returned (0 when the protocol holds).
int64_t pool_selftest(int64_t jobs, uint64_t seed);
}  // namespace deepkern::cpu
