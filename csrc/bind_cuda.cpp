// pybind11 module deepkern._cuda: argument checks and launches only, no kernel code.
//
// Arrays are CuPy arrays (anything with __cuda_array_interface__): float32, C-contiguous, in device
// memory on the current device. Outputs are allocated by the caller (backends/cuda.py, through
// CuPy's memory pool) and passed in; every launch goes on the stream whose handle the caller
// passes (CuPy's current stream). Function names and argument order follow deepkern._cpu, with
// the outputs and the stream appended. Every CUDA call and launch is checked: failures raise.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.hpp"
#include "cuda/activation.cuh"
#include "cuda/batchnorm.cuh"
#include "cuda/common.cuh"
#include "cuda/conv2d.cuh"
#include "cuda/loss.cuh"
#include "cuda/matmul.cuh"
#include "cuda/optim.cuh"
#include "cuda/pool.cuh"

namespace py = pybind11;
using deepkern::ShapeError;
namespace k = deepkern::cuda;

namespace {

// ------------------------------------------------------------------------ device arrays
// A view of a device array described by __cuda_array_interface__ (version 2 or 3).
struct DeviceArray {
    void* data = nullptr;
    std::vector<int64_t> shape;
    std::string typestr;
    int64_t size = 1;

    int dim(int i) const { return static_cast<int>(shape[static_cast<size_t>(i)]); }
    int ndim() const { return static_cast<int>(shape.size()); }
    const float* cf() const { return static_cast<const float*>(data); }
    float* f() const { return static_cast<float*>(data); }
};

int64_t itemsize_of(const std::string& typestr) { return std::stoll(typestr.substr(2)); }

// Reads and checks one array argument. typestrs: accepted element types ("<f4" for float32).
DeviceArray device_array(const py::handle& obj, const char* name, int ndim = -1, bool writable = false,
                         const std::vector<std::string>& typestrs = {"<f4"}) {
    const std::string n(name);
    if (obj.is_none() || !py::hasattr(obj, "__cuda_array_interface__"))
        throw py::type_error(n + ": expected a cupy.ndarray (an object with __cuda_array_interface__), got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::dict iface = obj.attr("__cuda_array_interface__");
    DeviceArray a;
    a.typestr = iface["typestr"].cast<std::string>();
    bool type_ok = false;
    for (const auto& t : typestrs) type_ok = type_ok || a.typestr == t;
    if (!type_ok) {
        std::string want;
        for (const auto& t : typestrs) want += (want.empty() ? "" : " or ") + t;
        throw py::type_error(n + ": expected element type " + want + " (float32 is <f4), got " + a.typestr);
    }
    for (auto d : iface["shape"].cast<py::tuple>()) a.shape.push_back(d.cast<int64_t>());
    if (ndim >= 0 && a.ndim() != ndim)
        throw ShapeError(n + ": expected a " + std::to_string(ndim) + "-D array, got " + std::to_string(a.ndim()) +
                         "-D");
    for (int64_t d : a.shape) {
        if (d > std::numeric_limits<int>::max())
            throw ShapeError(n + ": dimension too large for 32-bit indices");
        a.size *= d;
    }
    if (a.size == 0) throw ShapeError(n + ": expected a non-empty array");
    // strides None means C-contiguous; otherwise they must say so (extent-1 dimensions may have any stride)
    py::object strides = iface.contains("strides") ? py::object(iface["strides"]) : py::object(py::none());
    if (!strides.is_none()) {
        auto st = strides.cast<std::vector<int64_t>>();
        int64_t expect = itemsize_of(a.typestr);
        for (int i = a.ndim() - 1; i >= 0; --i) {
            if (a.shape[static_cast<size_t>(i)] != 1 && st[static_cast<size_t>(i)] != expect)
                throw ShapeError(n + ": expected a C-contiguous array");
            expect *= a.shape[static_cast<size_t>(i)];
        }
    }
    auto data = iface["data"].cast<py::tuple>();
    a.data = reinterpret_cast<void*>(data[0].cast<std::uintptr_t>());
    if (writable && data[1].cast<bool>()) throw ShapeError(n + ": array is read-only");
    // The memory must be device (or managed) memory of the current device: a kernel given a host
    // pointer would fault and poison the context for the whole process.
    cudaPointerAttributes attr{};
    CUDA_CHECK(cudaPointerGetAttributes(&attr, a.data));
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        throw py::type_error(n + ": the data pointer is not CUDA device memory");
    int current = 0;
    CUDA_CHECK(cudaGetDevice(&current));
    if (attr.type == cudaMemoryTypeDevice && attr.device != current)
        throw ShapeError(n + ": array is on GPU " + std::to_string(attr.device) + " but the current device is GPU " +
                         std::to_string(current));
    return a;
}

std::optional<DeviceArray> optional_array(const std::optional<py::handle>& obj, const char* name, int ndim = -1,
                                          bool writable = false) {
    if (!obj || obj->is_none()) return std::nullopt;
    return device_array(*obj, name, ndim, writable);
}

void expect_shape(const DeviceArray& a, const char* name, const std::vector<int64_t>& shape) {
    if (a.shape != shape) {
        std::string want = "(";
        for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
        throw ShapeError(std::string(name) + ": expected shape " + want + (shape.size() == 1 ? ",)" : ")"));
    }
}

cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// ------------------------------------------------------------------------ matmul
void matmul(py::handle a_obj, py::handle b_obj, std::optional<py::handle> bias_obj, bool relu, bool trans_a,
            bool trans_b, py::handle out_obj, std::uintptr_t stream) {
    DeviceArray a = device_array(a_obj, "a", 2), b = device_array(b_obj, "b", 2);
    int M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1);
    int KB = trans_b ? b.dim(1) : b.dim(0), N = trans_b ? b.dim(0) : b.dim(1);
    if (K != KB) throw ShapeError("a and b: inner dimensions differ");
    auto bias = optional_array(bias_obj, "bias", 1);
    if (bias) expect_shape(*bias, "bias", {N});
    DeviceArray c = device_array(out_obj, "out", 2, true);
    expect_shape(c, "out", {M, N});
    py::gil_scoped_release nogil;
    k::matmul_forward(a.cf(), b.cf(), bias ? bias->cf() : nullptr, c.f(), M, N, K, trans_a, trans_b, relu,
                      as_stream(stream));
}

void matmul_backward(py::handle g_obj, py::handle a_obj, py::handle b_obj, std::optional<py::handle> out_obj,
                     bool trans_a, bool trans_b, py::handle da_obj, py::handle db_obj,
                     std::optional<py::handle> dbias_obj, std::optional<py::handle> gmask_obj,
                     std::uintptr_t stream) {
    DeviceArray g = device_array(g_obj, "grad_out", 2), a = device_array(a_obj, "a", 2),
                b = device_array(b_obj, "b", 2);
    int M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1);
    int KB = trans_b ? b.dim(1) : b.dim(0), N = trans_b ? b.dim(0) : b.dim(1);
    if (K != KB) throw ShapeError("a and b: inner dimensions differ");
    expect_shape(g, "grad_out", {M, N});
    auto out = optional_array(out_obj, "out", 2);
    auto gmask = optional_array(gmask_obj, "gmask", 2, true);
    if (out) {
        expect_shape(*out, "out", {M, N});
        if (!gmask) throw ShapeError("gmask: scratch of shape (M, N) is required with out (fused ReLU)");
        expect_shape(*gmask, "gmask", {M, N});
    }
    DeviceArray da = device_array(da_obj, "grad_a", 2, true), db = device_array(db_obj, "grad_b", 2, true);
    expect_shape(da, "grad_a", a.shape);
    expect_shape(db, "grad_b", b.shape);
    auto dbias = optional_array(dbias_obj, "grad_bias", 1, true);
    if (dbias) expect_shape(*dbias, "grad_bias", {N});
    py::gil_scoped_release nogil;
    k::matmul_backward(g.cf(), a.cf(), b.cf(), out ? out->cf() : nullptr, out ? gmask->f() : nullptr, da.f(), db.f(),
                       dbias ? dbias->f() : nullptr, M, N, K, trans_a, trans_b, as_stream(stream));
}

// ------------------------------------------------------------------------ conv2d
using Pair = std::pair<int, int>;

k::Conv2dShape conv_shape(const DeviceArray& x, const DeviceArray& w, Pair stride, Pair padding) {
    return deepkern::make_conv2d_shape(x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(2), w.dim(3),
                                       stride, padding);
}

void conv2d(py::handle x_obj, py::handle w_obj, std::optional<py::handle> bias_obj, Pair stride, Pair padding,
            py::handle y_obj, std::uintptr_t stream) {
    DeviceArray x = device_array(x_obj, "x", 4), w = device_array(w_obj, "w", 4);
    k::Conv2dShape s = conv_shape(x, w, stride, padding);
    auto bias = optional_array(bias_obj, "bias", 1);
    if (bias) expect_shape(*bias, "bias", {s.OC});
    DeviceArray y = device_array(y_obj, "out", 4, true);
    expect_shape(y, "out", {s.N, s.OC, s.OH, s.OW});
    py::gil_scoped_release nogil;
    k::conv2d_forward(s, x.cf(), w.cf(), bias ? bias->cf() : nullptr, y.f(), as_stream(stream));
}

void conv2d_backward(py::handle g_obj, py::handle x_obj, py::handle w_obj, Pair stride, Pair padding,
                     std::optional<py::handle> gx_obj, py::handle gw_obj, std::optional<py::handle> gb_obj, std::uintptr_t stream) {
    DeviceArray x = device_array(x_obj, "x", 4), w = device_array(w_obj, "w", 4), g = device_array(g_obj, "grad_out", 4);
    k::Conv2dShape s = conv_shape(x, w, stride, padding);
    expect_shape(g, "grad_out", {s.N, s.OC, s.OH, s.OW});
    auto gx = optional_array(gx_obj, "grad_x", 4, true);  // None: the input gradient is not computed
    DeviceArray gw = device_array(gw_obj, "grad_w", 4, true);
    if (gx) expect_shape(*gx, "grad_x", x.shape);
    expect_shape(gw, "grad_w", w.shape);
    auto gb = optional_array(gb_obj, "grad_bias", 1, true);
    if (gb) expect_shape(*gb, "grad_bias", {s.OC});
    py::gil_scoped_release nogil;
    k::conv2d_backward(s, g.cf(), x.cf(), w.cf(), gx ? gx->f() : nullptr, gw.f(), gb ? gb->f() : nullptr,
                       as_stream(stream));
}

// ------------------------------------------------------------------------ pooling
k::Pool2dShape pool_shape(const DeviceArray& x, Pair kernel, Pair stride, Pair padding) {
    return deepkern::make_pool2d_shape(x.dim(0), x.dim(1), x.dim(2), x.dim(3), kernel, stride, padding);
}

template <void (*Forward)(const k::Pool2dShape&, const float*, float*, cudaStream_t)>
void pool_forward(py::handle x_obj, Pair kernel, Pair stride, Pair padding, py::handle y_obj, std::uintptr_t stream) {
    DeviceArray x = device_array(x_obj, "x", 4);
    k::Pool2dShape s = pool_shape(x, kernel, stride, padding);
    DeviceArray y = device_array(y_obj, "out", 4, true);
    expect_shape(y, "out", {s.N, s.C, s.OH, s.OW});
    py::gil_scoped_release nogil;
    Forward(s, x.cf(), y.f(), as_stream(stream));
}

void max_pool2d_backward(py::handle g_obj, py::handle x_obj, Pair kernel, Pair stride, Pair padding,
                         py::handle gx_obj, std::uintptr_t stream) {
    DeviceArray g = device_array(g_obj, "grad_out", 4), x = device_array(x_obj, "x", 4);
    k::Pool2dShape s = pool_shape(x, kernel, stride, padding);
    expect_shape(g, "grad_out", {s.N, s.C, s.OH, s.OW});
    DeviceArray gx = device_array(gx_obj, "grad_x", 4, true);
    expect_shape(gx, "grad_x", x.shape);
    py::gil_scoped_release nogil;
    k::max_pool2d_backward(s, g.cf(), x.cf(), gx.f(), as_stream(stream));
}

void avg_pool2d_backward(py::handle g_obj, py::handle x_obj, Pair kernel, Pair stride, Pair padding,
                         py::handle gx_obj, std::uintptr_t stream) {
    DeviceArray g = device_array(g_obj, "grad_out", 4), x = device_array(x_obj, "x", 4);
    k::Pool2dShape s = pool_shape(x, kernel, stride, padding);
    expect_shape(g, "grad_out", {s.N, s.C, s.OH, s.OW});
    DeviceArray gx = device_array(gx_obj, "grad_x", 4, true);
    expect_shape(gx, "grad_x", x.shape);
    py::gil_scoped_release nogil;
    k::avg_pool2d_backward(s, g.cf(), gx.f(), as_stream(stream));
}

// ------------------------------------------------------------------------ activations
void relu(py::handle x_obj, py::handle y_obj, std::uintptr_t stream) {
    DeviceArray x = device_array(x_obj, "x"), y = device_array(y_obj, "out", -1, true);
    expect_shape(y, "out", x.shape);
    py::gil_scoped_release nogil;
    k::relu_forward(x.cf(), y.f(), x.size, as_stream(stream));
}

void relu_backward(py::handle g_obj, py::handle x_obj, py::handle gx_obj, std::uintptr_t stream) {
    DeviceArray g = device_array(g_obj, "grad_out"), x = device_array(x_obj, "x");
    expect_shape(g, "grad_out", x.shape);
    DeviceArray gx = device_array(gx_obj, "grad_x", -1, true);
    expect_shape(gx, "grad_x", x.shape);
    py::gil_scoped_release nogil;
    k::relu_backward(g.cf(), x.cf(), gx.f(), x.size, as_stream(stream));
}

// (outer, dim, inner) view of an array around axis
void split_axis(const DeviceArray& x, int axis, int64_t& outer, int64_t& d, int64_t& inner) {
    if (axis < 0 || axis >= x.ndim()) throw ShapeError("axis: out of range");
    outer = 1; inner = 1; d = x.shape[static_cast<size_t>(axis)];
    for (int i = 0; i < axis; ++i) outer *= x.shape[static_cast<size_t>(i)];
    for (int i = axis + 1; i < x.ndim(); ++i) inner *= x.shape[static_cast<size_t>(i)];
}

template <bool Log>
void softmax_like(py::handle x_obj, int axis, py::handle y_obj, std::uintptr_t stream) {
    DeviceArray x = device_array(x_obj, "x"), y = device_array(y_obj, "out", -1, true);
    expect_shape(y, "out", x.shape);
    int64_t outer, d, inner;
    split_axis(x, axis, outer, d, inner);
    py::gil_scoped_release nogil;
    k::softmax_forward(x.cf(), y.f(), outer, d, inner, Log, as_stream(stream));
}

template <bool Log>
void softmax_like_backward(py::handle g_obj, py::handle y_obj, int axis, py::handle gx_obj, std::uintptr_t stream) {
    DeviceArray g = device_array(g_obj, "grad_out"), y = device_array(y_obj, "y");
    expect_shape(g, "grad_out", y.shape);
    DeviceArray gx = device_array(gx_obj, "grad_x", -1, true);
    expect_shape(gx, "grad_x", y.shape);
    int64_t outer, d, inner;
    split_axis(y, axis, outer, d, inner);
    py::gil_scoped_release nogil;
    k::softmax_backward(g.cf(), y.cf(), gx.f(), outer, d, inner, Log, as_stream(stream));
}

// ------------------------------------------------------------------------ loss
// Labels stay on the GPU, so their range is not checked here: a label outside [0, C) makes the
// kernels write NaN instead of reading out of bounds, and the forward counts such labels next to
// the loss (out is [loss, count]; the Python layer reads both when it reads the loss).
DeviceArray device_labels(py::handle obj, int N) {
    DeviceArray l = device_array(obj, "labels", 1, false, {"<i8", "<i4"});
    expect_shape(l, "labels", {N});
    return l;
}

void cross_entropy(py::handle logits_obj, py::handle labels_obj, py::handle row_loss_obj, py::handle loss_obj,
                   std::uintptr_t stream) {
    DeviceArray logits = device_array(logits_obj, "logits", 2);
    int N = logits.dim(0), C = logits.dim(1);
    DeviceArray labels = device_labels(labels_obj, N);
    DeviceArray row_loss = device_array(row_loss_obj, "row_loss", 1, true);
    expect_shape(row_loss, "row_loss", {N});
    DeviceArray loss = device_array(loss_obj, "out", 1, true);
    expect_shape(loss, "out", {2});  // [mean loss, count of labels outside [0, C)]
    py::gil_scoped_release nogil;
    k::cross_entropy_forward(logits.cf(), labels.data, labels.typestr == "<i8", row_loss.f(), loss.f(), N, C,
                             as_stream(stream));
}

void cross_entropy_backward(py::handle logits_obj, py::handle labels_obj, float grad, py::handle gl_obj,
                            std::uintptr_t stream) {
    DeviceArray logits = device_array(logits_obj, "logits", 2);
    int N = logits.dim(0), C = logits.dim(1);
    DeviceArray labels = device_labels(labels_obj, N);
    DeviceArray gl = device_array(gl_obj, "grad_logits", 2, true);
    expect_shape(gl, "grad_logits", logits.shape);
    py::gil_scoped_release nogil;
    k::cross_entropy_backward(logits.cf(), labels.data, labels.typestr == "<i8", gl.f(), N, C, grad,
                              as_stream(stream));
}

// ------------------------------------------------------------------------ batch norm
// x (N, C, *spatial) seen as (N, C, S)
void channel_dims(const DeviceArray& x, int64_t& N, int64_t& C, int64_t& S) {
    if (x.ndim() < 2) throw ShapeError("x: expected (N, C, ...) with at least 2 dimensions");
    N = x.shape[0];
    C = x.shape[1];
    S = x.size / (N * C);
}

std::optional<DeviceArray> channel_vector(const std::optional<py::handle>& obj, const char* name, int64_t C,
                                          bool writable = false) {
    auto v = optional_array(obj, name, 1, writable);
    if (v) expect_shape(*v, name, {C});
    return v;
}

DeviceArray workspace_array(const py::handle& obj, int64_t N, int64_t C, int64_t S) {
    DeviceArray w = device_array(obj, "workspace", 1, true, {"<f8"});
    if (w.size < k::batch_norm_workspace(N, C, S)) throw ShapeError("workspace: too small (see batch_norm_workspace)");
    return w;
}

void batch_norm(py::handle x_obj, std::optional<py::handle> w_obj, std::optional<py::handle> b_obj,
                std::optional<py::handle> rm_obj, std::optional<py::handle> rv_obj, bool training, float momentum,
                float eps, bool unbiased, py::handle out_obj, py::handle mean_obj, py::handle invstd_obj,
                py::handle ws_obj, std::uintptr_t stream) {
    DeviceArray x = device_array(x_obj, "x");
    int64_t N, C, S;
    channel_dims(x, N, C, S);
    auto w = channel_vector(w_obj, "weight", C), b = channel_vector(b_obj, "bias", C);
    auto rm = channel_vector(rm_obj, "running_mean", C, training);
    auto rv = channel_vector(rv_obj, "running_var", C, training);
    if (static_cast<bool>(rm) != static_cast<bool>(rv)) throw ShapeError("running_mean/running_var: give both or neither");
    if (!training && !rm) throw ShapeError("running_mean/running_var: required when training=False");
    if (training && N * S < 2) throw ShapeError("x: expected more than 1 value per channel when training");
    if (!(eps > 0.0f)) throw ShapeError("eps: expected a value > 0");
    DeviceArray y = device_array(out_obj, "out", -1, true);
    expect_shape(y, "out", x.shape);
    DeviceArray mean = device_array(mean_obj, "mean", 1, true), invstd = device_array(invstd_obj, "invstd", 1, true);
    expect_shape(mean, "mean", {C});
    expect_shape(invstd, "invstd", {C});
    DeviceArray ws = workspace_array(ws_obj, N, C, S);
    py::gil_scoped_release nogil;
    const float *pw = w ? w->cf() : nullptr, *pb = b ? b->cf() : nullptr;
    if (training)
        k::batch_norm_forward_train(x.cf(), pw, pb, rm ? rm->f() : nullptr, rv ? rv->f() : nullptr, y.f(), mean.f(),
                                    invstd.f(), static_cast<double*>(ws.data), N, C, S, momentum, eps, unbiased,
                                    as_stream(stream));
    else
        k::batch_norm_forward_eval(x.cf(), pw, pb, rm->cf(), rv->cf(), y.f(), mean.f(), invstd.f(), N, C, S, eps,
                                   as_stream(stream));
}

void batch_norm_backward(py::handle g_obj, py::handle x_obj, std::optional<py::handle> w_obj, py::handle mean_obj,
                         py::handle invstd_obj, bool training, py::handle gx_obj, std::optional<py::handle> gw_obj,
                         std::optional<py::handle> gb_obj, py::handle ws_obj, std::uintptr_t stream) {
    DeviceArray g = device_array(g_obj, "grad_out"), x = device_array(x_obj, "x");
    expect_shape(g, "grad_out", x.shape);
    int64_t N, C, S;
    channel_dims(x, N, C, S);
    auto w = channel_vector(w_obj, "weight", C);
    DeviceArray mean = device_array(mean_obj, "mean", 1), invstd = device_array(invstd_obj, "invstd", 1);
    expect_shape(mean, "mean", {C});
    expect_shape(invstd, "invstd", {C});
    DeviceArray gx = device_array(gx_obj, "grad_x", -1, true);
    expect_shape(gx, "grad_x", x.shape);
    auto gw = channel_vector(gw_obj, "grad_weight", C, true), gb = channel_vector(gb_obj, "grad_bias", C, true);
    DeviceArray ws = workspace_array(ws_obj, N, C, S);
    py::gil_scoped_release nogil;
    k::batch_norm_backward(g.cf(), x.cf(), w ? w->cf() : nullptr, mean.cf(), invstd.cf(), gx.f(),
                           gw ? gw->f() : nullptr, gb ? gb->f() : nullptr, static_cast<double*>(ws.data), N, C, S,
                           training, as_stream(stream));
}

// ------------------------------------------------------------------------ optimizers
void sgd_update(py::handle p_obj, py::handle g_obj, std::optional<py::handle> v_obj, float lr, float momentum,
                float weight_decay, bool nesterov, std::uintptr_t stream) {
    DeviceArray p = device_array(p_obj, "param", -1, true), g = device_array(g_obj, "grad");
    expect_shape(g, "grad", p.shape);
    auto v = optional_array(v_obj, "velocity", -1, true);
    if (v) expect_shape(*v, "velocity", p.shape);
    if (momentum != 0.0f && !v) throw ShapeError("velocity: required when momentum > 0");
    py::gil_scoped_release nogil;
    k::sgd_update(p.f(), g.cf(), v ? v->f() : nullptr, p.size, lr, momentum, weight_decay, nesterov,
                  as_stream(stream));
}

void adam_update(py::handle p_obj, py::handle g_obj, py::handle m_obj, py::handle v_obj, int64_t step, float lr,
                 float beta1, float beta2, float eps, float weight_decay, std::uintptr_t stream) {
    DeviceArray p = device_array(p_obj, "param", -1, true), g = device_array(g_obj, "grad");
    DeviceArray m = device_array(m_obj, "m", -1, true), v = device_array(v_obj, "v", -1, true);
    expect_shape(g, "grad", p.shape);
    expect_shape(m, "m", p.shape);
    expect_shape(v, "v", p.shape);
    if (step < 1) throw ShapeError("step: expected >= 1");
    py::gil_scoped_release nogil;
    k::adam_update(p.f(), g.cf(), m.f(), v.f(), p.size, step, lr, beta1, beta2, eps, weight_decay,
                   as_stream(stream));
}

void rmsprop_update(py::handle p_obj, py::handle g_obj, py::handle s_obj, float lr, float alpha, float eps,
                    float weight_decay, std::uintptr_t stream) {
    DeviceArray p = device_array(p_obj, "param", -1, true), g = device_array(g_obj, "grad");
    DeviceArray s = device_array(s_obj, "square_avg", -1, true);
    expect_shape(g, "grad", p.shape);
    expect_shape(s, "square_avg", p.shape);
    py::gil_scoped_release nogil;
    k::rmsprop_update(p.f(), g.cf(), s.f(), p.size, lr, alpha, eps, weight_decay, as_stream(stream));
}

// Waits for the stream and reports any error a kernel raised asynchronously.
void synchronize(std::uintptr_t stream) {
    py::gil_scoped_release nogil;
    CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

// Versions come back as 12040 -> "12.4".
std::string version_string(int v) {
    return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// Never throws: on a machine with no GPU or no driver it reports that and a count of 0.
py::dict device_query() {
    py::dict out;
    int runtime = 0, driver = 0, count = 0;
    cudaRuntimeGetVersion(&runtime);
    out["runtime_version"] = version_string(runtime);
    cudaError_t err = cudaDriverGetVersion(&driver);
    out["driver_version"] = (err == cudaSuccess && driver > 0) ? py::str(version_string(driver))
                                                                 : py::str("no driver");
    err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        out["device_count"] = 0;
        out["error"] = std::string(cudaGetErrorString(err));
        cudaGetLastError();  // clear the sticky error so later calls start clean
        out["devices"] = py::list();
        return out;
    }
    out["device_count"] = count;
    if (count > 0) {  // can the current GPU run this build's kernels (a real target or PTX to JIT)?
        const cudaError_t image = k::kernel_image_status();
        if (image != cudaSuccess) {
            out["kernel_image_error"] = std::string(cudaGetErrorName(image)) + ": " + cudaGetErrorString(image);
            cudaGetLastError();
        }
    }
    py::list devices;
    for (int i = 0; i < count; ++i) {
        cudaDeviceProp prop{};
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
        py::dict d;
        d["index"] = i;
        d["name"] = std::string(prop.name);
        d["compute_capability"] = std::to_string(prop.major) + "." + std::to_string(prop.minor);
        d["memory_gib"] = static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0);
        d["multiprocessors"] = prop.multiProcessorCount;
        devices.append(d);
    }
    out["devices"] = devices;
    return out;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "deepkern CUDA kernels";
    m.def("device_query", &device_query,
          "Device count, CUDA runtime and driver versions and per-GPU properties; never raises.");
    const auto stream = py::arg("stream") = static_cast<std::uintptr_t>(0);
    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("bias").none(true), py::arg("relu"),
          py::arg("trans_a"), py::arg("trans_b"), py::arg("out"), stream);
    m.def("matmul_backward", &matmul_backward, py::arg("grad_out"), py::arg("a"), py::arg("b"),
          py::arg("out").none(true), py::arg("trans_a"), py::arg("trans_b"), py::arg("grad_a"), py::arg("grad_b"),
          py::arg("grad_bias").none(true), py::arg("gmask").none(true), stream);
    m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("bias").none(true), py::arg("stride"),
          py::arg("padding"), py::arg("out"), stream);
    m.def("conv2d_backward", &conv2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("w"), py::arg("stride"),
          py::arg("padding"), py::arg("grad_x").none(true), py::arg("grad_w"), py::arg("grad_bias").none(true), stream);
    m.def("max_pool2d", &pool_forward<k::max_pool2d_forward>, py::arg("x"), py::arg("kernel"), py::arg("stride"),
          py::arg("padding"), py::arg("out"), stream);
    m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("kernel"),
          py::arg("stride"), py::arg("padding"), py::arg("grad_x"), stream);
    m.def("avg_pool2d", &pool_forward<k::avg_pool2d_forward>, py::arg("x"), py::arg("kernel"), py::arg("stride"),
          py::arg("padding"), py::arg("out"), stream);
    m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("kernel"),
          py::arg("stride"), py::arg("padding"), py::arg("grad_x"), stream);
    m.def("relu", &relu, py::arg("x"), py::arg("out"), stream);
    m.def("relu_backward", &relu_backward, py::arg("grad_out"), py::arg("x"), py::arg("grad_x"), stream);
    m.def("softmax", &softmax_like<false>, py::arg("x"), py::arg("axis"), py::arg("out"), stream);
    m.def("softmax_backward", &softmax_like_backward<false>, py::arg("grad_out"), py::arg("y"), py::arg("axis"),
          py::arg("grad_x"), stream);
    m.def("log_softmax", &softmax_like<true>, py::arg("x"), py::arg("axis"), py::arg("out"), stream);
    m.def("log_softmax_backward", &softmax_like_backward<true>, py::arg("grad_out"), py::arg("y"), py::arg("axis"),
          py::arg("grad_x"), stream);
    m.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("labels"), py::arg("row_loss"),
          py::arg("out"), stream);
    m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("logits"), py::arg("labels"), py::arg("grad"),
          py::arg("grad_logits"), stream);
    m.def("batch_norm_workspace", &k::batch_norm_workspace, py::arg("N"), py::arg("C"), py::arg("S"),
          "float64 elements of scratch batch_norm/batch_norm_backward need for x (N, C, S)");
    m.def("batch_norm", &batch_norm, py::arg("x"), py::arg("weight").none(true), py::arg("bias").none(true),
          py::arg("running_mean").none(true), py::arg("running_var").none(true), py::arg("training"),
          py::arg("momentum"), py::arg("eps"), py::arg("unbiased"), py::arg("out"), py::arg("mean"),
          py::arg("invstd"), py::arg("workspace"), stream);
    m.def("batch_norm_backward", &batch_norm_backward, py::arg("grad_out"), py::arg("x"),
          py::arg("weight").none(true), py::arg("mean"), py::arg("invstd"), py::arg("training"), py::arg("grad_x"),
          py::arg("grad_weight").none(true), py::arg("grad_bias").none(true), py::arg("workspace"), stream);
    m.def("sgd_update", &sgd_update, py::arg("param"), py::arg("grad"), py::arg("velocity").none(true),
          py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"), stream);
    m.def("adam_update", &adam_update, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"),
          py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), stream);
    m.def("rmsprop_update", &rmsprop_update, py::arg("param"), py::arg("grad"), py::arg("square_avg"),
          py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), stream);
    m.def("synchronize", &synchronize, stream,
          "Wait for the stream; raises if a kernel on it failed asynchronously.");
    m.def("matmul_variant", &k::matmul_variant, "The GEMM in use: 'fp32' (SIMT) or 'tf32' (tensor cores, sm_80+)");
    m.def("set_matmul_variant", &k::set_matmul_variant, py::arg("name"),
          "Select the GEMM: 'fp32' or 'tf32' (falls back to fp32 on GPUs older than sm_80)");
}
