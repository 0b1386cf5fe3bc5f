// C entry points over the real host launchers of csrc/cuda (compiled for the CPU emulator), for
// ctypes (tests/cuda_emu/emu.py). "Device" pointers are host pointers here. Each call returns 0, or
// 1 with the C++ exception's text in emu_message() (a launch error becomes a CudaError there).
#include <cstring>
#include <exception>
#include <string>

#include "common/geometry.hpp"
#include "cuda/activation.cuh"
#include "cuda/batchnorm.cuh"
#include "cuda/conv2d.cuh"
#include "cuda/loss.cuh"
#include "cuda/matmul.cuh"
#include "cuda/optim.cuh"
#include "cuda/pool.cuh"

namespace k = deepkern::cuda;

namespace {
std::string g_message;

template <class F>
int guarded(F&& f) {
    g_message.clear();
    try {
        f();
        return 0;
    } catch (const std::exception& e) {
        g_message = e.what();
        return 1;
    }
}

// dims: N, C, H, W, OC, KH, KW, SH, SW, PH, PW
deepkern::Conv2dShape conv_shape(const int* d) {
    return deepkern::make_conv2d_shape(d[0], d[1], d[2], d[3], d[4], d[1], d[5], d[6], {d[7], d[8]}, {d[9], d[10]});
}
// dims: N, C, H, W, KH, KW, SH, SW, PH, PW
deepkern::Pool2dShape pool_shape(const int* d) {
    return deepkern::make_pool2d_shape(d[0], d[1], d[2], d[3], {d[4], d[5]}, {d[6], d[7]}, {d[8], d[9]});
}
}  // namespace

extern "C" {

const char* emu_message() { return g_message.c_str(); }

void emu_set_device(int sms, int major) {
    cuda_emu::device().sms = sms;
    cuda_emu::device().major = major;
}

// Run only the first `first` and last `last` blocks of every grid (-1, -1: all).
void emu_keep_blocks(long long first, long long last) {
    cuda_emu::device().keep_first = first;
    cuda_emu::device().keep_last = last;
}

// Only the next n launches run (-1: all).
void emu_launch_budget(long long n) { cuda_emu::device().launch_budget = n; }

long long emu_blocks_run() { return cuda_emu::device().blocks_run; }

int emu_set_matmul_variant(const char* name) { return guarded([&] { k::set_matmul_variant(name); }); }

int emu_matmul(const float* A, const float* B, const float* bias, float* C, int M, int N, int K, int ta, int tb,
               int relu) {
    return guarded([&] { k::matmul_forward(A, B, bias, C, M, N, K, ta, tb, relu, nullptr); });
}

int emu_matmul_backward(const float* G, const float* A, const float* B, const float* out, float* gmask, float* dA,
                        float* dB, float* dbias, int M, int N, int K, int ta, int tb) {
    return guarded([&] { k::matmul_backward(G, A, B, out, gmask, dA, dB, dbias, M, N, K, ta, tb, nullptr); });
}

int emu_column_sum(const float* X, float* out, int M, int N) {
    return guarded([&] { k::column_sum(X, out, M, N, nullptr); });
}

int emu_conv2d(const int* dims, const float* x, const float* w, const float* bias, float* y) {
    return guarded([&] { k::conv2d_forward(conv_shape(dims), x, w, bias, y, nullptr); });
}

int emu_conv2d_backward(const int* dims, const float* gy, const float* x, const float* w, float* gx, float* gw,
                        float* gb) {
    return guarded([&] { k::conv2d_backward(conv_shape(dims), gy, x, w, gx, gw, gb, nullptr); });
}

// kind: 0 max forward (in = x), 1 max backward (in = gy), 2 avg forward, 3 avg backward (in = gy)
int emu_pool(int kind, const int* dims, const float* in, const float* x, float* out) {
    return guarded([&] {
        const deepkern::Pool2dShape s = pool_shape(dims);
        if (kind == 0) k::max_pool2d_forward(s, in, out, nullptr);
        else if (kind == 1) k::max_pool2d_backward(s, in, x, out, nullptr);
        else if (kind == 2) k::avg_pool2d_forward(s, in, out, nullptr);
        else k::avg_pool2d_backward(s, in, out, nullptr);
    });
}

int emu_relu(const float* x, float* y, long long n) { return guarded([&] { k::relu_forward(x, y, n, nullptr); }); }

int emu_relu_backward(const float* gy, const float* x, float* gx, long long n) {
    return guarded([&] { k::relu_backward(gy, x, gx, n, nullptr); });
}

int emu_softmax(const float* x, float* y, long long outer, long long dim, long long inner, int log) {
    return guarded([&] { k::softmax_forward(x, y, outer, dim, inner, log, nullptr); });
}

int emu_softmax_backward(const float* gy, const float* y, float* gx, long long outer, long long dim,
                         long long inner, int log) {
    return guarded([&] { k::softmax_backward(gy, y, gx, outer, dim, inner, log, nullptr); });
}

// loss points at 2 floats: the mean and the count of labels outside [0, C)
int emu_cross_entropy(const float* logits, const void* labels, int is64, float* row_loss, float* loss, int N,
                      int C) {
    return guarded([&] { k::cross_entropy_forward(logits, labels, is64, row_loss, loss, N, C, nullptr); });
}

int emu_cross_entropy_backward(const float* logits, const void* labels, int is64, float* gl, int N, int C,
                               float grad) {
    return guarded([&] { k::cross_entropy_backward(logits, labels, is64, gl, N, C, grad, nullptr); });
}

long long emu_batch_norm_workspace(long long N, long long C, long long S) { return k::batch_norm_workspace(N, C, S); }

int emu_batch_norm(const float* x, const float* w, const float* b, float* rm, float* rv, float* y, float* mean,
                   float* invstd, double* ws, long long N, long long C, long long S, int training, float momentum,
                   float eps, int unbiased) {
    return guarded([&] {
        if (training)
            k::batch_norm_forward_train(x, w, b, rm, rv, y, mean, invstd, ws, N, C, S, momentum, eps, unbiased, nullptr);
        else
            k::batch_norm_forward_eval(x, w, b, rm, rv, y, mean, invstd, N, C, S, eps, nullptr);
    });
}

int emu_batch_norm_backward(const float* g, const float* x, const float* w, const float* mean, const float* invstd,
                            float* gx, float* gw, float* gb, double* ws, long long N, long long C, long long S,
                            int training) {
    return guarded([&] {
        k::batch_norm_backward(g, x, w, mean, invstd, gx, gw, gb, ws, N, C, S, training, nullptr);
    });
}

int emu_sgd(float* p, const float* g, float* v, long long n, float lr, float momentum, float wd, int nesterov) {
    return guarded([&] { k::sgd_update(p, g, v, n, lr, momentum, wd, nesterov, nullptr); });
}

int emu_adam(float* p, const float* g, float* m, float* v, long long n, long long step, float lr, float b1,
             float b2, float eps, float wd) {
    return guarded([&] { k::adam_update(p, g, m, v, n, step, lr, b1, b2, eps, wd, nullptr); });
}

int emu_rmsprop(float* p, const float* g, float* s, long long n, float lr, float alpha, float eps, float wd) {
    return guarded([&] { k::rmsprop_update(p, g, s, n, lr, alpha, eps, wd, nullptr); });
}

}  // extern "C"
