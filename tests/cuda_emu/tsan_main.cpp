// The ThreadSanitizer subset: one call of each kernel family that shares memory between the threads
// of a block (GEMMs, conv, softmax and loss reductions, max-pool atomics) on small awkward shapes.
// Exits non-zero on a failed call; ThreadSanitizer itself exits 66 after reporting a race.
#include <cstdio>
#include <cstring>
#include <vector>

extern "C" {
const char* emu_message();
void emu_set_device(int sms, int major);
int emu_set_matmul_variant(const char* name);
int emu_matmul(const float*, const float*, const float*, float*, int, int, int, int, int, int);
int emu_conv2d(const int*, const float*, const float*, const float*, float*);
int emu_conv2d_backward(const int*, const float*, const float*, const float*, float*, float*, float*);
int emu_pool(int, const int*, const float*, const float*, float*);
int emu_softmax(const float*, float*, long long, long long, long long, int);
int emu_softmax_backward(const float*, const float*, float*, long long, long long, long long, int);
int emu_cross_entropy(const float*, const void*, int, float*, float*, int, int);
}

namespace {
std::vector<float> ramp(size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>((i * 7919) % 23) / 11.f - 1.f;
    return v;
}
int check(int rc, const char* what) {
    if (rc != 0) std::fprintf(stderr, "%s failed: %s\n", what, emu_message());
    return rc;
}
}  // namespace

int main(int argc, char** argv) {
    const char* only = argc > 1 ? argv[1] : "";
    auto want = [&](const char* name) { return *only == '\0' || std::strcmp(only, name) == 0; };
    int bad = 0;
    if (want("matmul")) {  // both SIMT tiles and the TF32 path, 2 k-tiles each
        const int M = 67, N = 70, K = 33;
        auto a = ramp(M * K), b = ramp(K * N);
        std::vector<float> c(M * N);
        emu_set_device(1, 9);  // one SM: the 128 tile
        bad |= check(emu_matmul(a.data(), b.data(), nullptr, c.data(), M, N, K, 0, 0, 0), "matmul simt<128>");
        emu_set_device(1000, 9);
        bad |= check(emu_matmul(a.data(), b.data(), nullptr, c.data(), M, N, K, 0, 0, 0), "matmul simt<64>");
        bad |= check(emu_set_matmul_variant("tf32"), "variant");
        bad |= check(emu_matmul(a.data(), b.data(), nullptr, c.data(), M, N, K, 1, 1, 1), "matmul tf32");
        bad |= check(emu_set_matmul_variant("fp32"), "variant");
    }
    if (want("conv")) {
        const int d[11] = {2, 3, 7, 6, 5, 3, 3, 1, 1, 1, 1};  // N C H W OC KH KW SH SW PH PW
        auto x = ramp(2 * 3 * 7 * 6), w = ramp(5 * 3 * 3 * 3), gy = ramp(2 * 5 * 7 * 6);
        std::vector<float> y(2 * 5 * 7 * 6), gx(x.size()), gw(w.size()), gb(5);
        emu_set_device(1000, 9);  // many SMs: the weight gradient splits its sum (atomics)
        bad |= check(emu_conv2d(d, x.data(), w.data(), nullptr, y.data()), "conv2d");
        bad |= check(emu_conv2d_backward(d, gy.data(), x.data(), w.data(), gx.data(), gw.data(), gb.data()),
                     "conv2d_backward");
    }
    if (want("softmax")) {  // warp rows, block rows
        auto x = ramp(3 * 1500);
        std::vector<float> y(x.size()), g(x.size());
        bad |= check(emu_softmax(x.data(), y.data(), 9, 500, 1, 0), "softmax warp");
        bad |= check(emu_softmax(x.data(), y.data(), 3, 1500, 1, 1), "log_softmax block");
        bad |= check(emu_softmax_backward(x.data(), y.data(), g.data(), 3, 1500, 1, 0), "softmax_backward block");
    }
    if (want("loss")) {
        auto logits = ramp(37 * 10);
        std::vector<long long> labels(37);
        for (int i = 0; i < 37; ++i) labels[i] = i % 10;
        std::vector<float> rows(37), loss(2);
        bad |= check(emu_cross_entropy(logits.data(), labels.data(), 1, rows.data(), loss.data(), 37, 10), "ce");
    }
    if (want("pool")) {
        const int d[10] = {1, 2, 9, 8, 3, 3, 1, 1, 1, 1};
        auto x = ramp(2 * 9 * 8), gy = ramp(2 * 9 * 8);
        std::vector<float> gx(x.size());
        bad |= check(emu_pool(1, d, gy.data(), x.data(), gx.data()), "max_pool backward");
    }
    std::printf("tsan subset done: %s\n", bad ? "FAILED" : "ok");
    return bad;
}
