// pybind11 module deepkern._cpu: argument checks and calls only, no kernel code.
// deepkern.ops validates first; these checks are the second line, so that no call from
// Python can make a kernel read or write out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "common/errors.hpp"
#include "common/host_cache.hpp"
#include "common/parallel.hpp"
#include "cpu/activation.hpp"
#include "cpu/batchnorm.hpp"
#include "cpu/bind_checks.hpp"
#include "cpu/conv2d.hpp"
#include "cpu/conv2d_fused.hpp"
#include "cpu/conv2d_bf16.hpp"
#include "cpu/gemm_bf16.hpp"
#include "cpu/loss.hpp"
#include "cpu/matmul.hpp"
#include "cpu/parallel_selftest.hpp"
#include "cpu/pool.hpp"
#include "cpu/simd_variant.hpp"

namespace py = pybind11;
using deepkern::ShapeError;
namespace k = deepkern::cpu;
using deepkern::bind::checked;
using deepkern::bind::checked_writable;
using deepkern::bind::no_overlap;
using deepkern::bind::same_shape;

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using Shape = std::vector<py::ssize_t>;

// A new C-contiguous float32 array for a kernel to fill. Large ones come from the host cache
// (see common/host_cache.hpp) and go back to it when the array is freed.
FloatArray new_output(const Shape& shape) {
    size_t count = 1;
    for (py::ssize_t d : shape) count *= static_cast<size_t>(d);
    const size_t bytes = count * sizeof(float);
    if (bytes < deepkern::HostCache::kMinBytes) return FloatArray(shape);
    auto& cache = deepkern::HostCache::instance();
    void* data = cache.acquire(bytes);
    // The capsule owns the buffer and knows its size; freeing the array hands it back to the cache.
    struct Owned { void* data; size_t bytes; };
    auto* owned = new Owned{data, bytes};
    py::capsule owner(owned, [](void* ptr) {
        auto* o = static_cast<Owned*>(ptr);
        deepkern::HostCache::instance().release(o->data, o->bytes);
        delete o;
    });
    return FloatArray(shape, static_cast<float*>(data), owner);
}

const float* cptr(const py::array& a) { return static_cast<const float*>(a.data()); }
float* mptr(py::array& a) { return static_cast<float*>(a.mutable_data()); }
int dim(const py::array& a, int i) { return static_cast<int>(a.shape(i)); }

// ------------------------------------------------------------------------ matmul
py::array matmul(py::handle a_obj, py::handle b_obj, std::optional<py::handle> bias_obj,
                 bool relu, bool trans_a, bool trans_b, bool bf16) {
    py::array a = checked(a_obj, "a", 2), b = checked(b_obj, "b", 2);
    int M = trans_a ? dim(a, 1) : dim(a, 0), K = trans_a ? dim(a, 0) : dim(a, 1);
    int KB = trans_b ? dim(b, 1) : dim(b, 0), N = trans_b ? dim(b, 0) : dim(b, 1);
    if (K != KB) throw ShapeError("a and b: inner dimensions differ");
    const float* bias = nullptr;
    py::array bias_arr;
    if (bias_obj && !bias_obj->is_none()) {
        bias_arr = checked(*bias_obj, "bias", 1);
        if (dim(bias_arr, 0) != N) throw ShapeError("bias: expected one value per output column");
        bias = cptr(bias_arr);
    }
    FloatArray c = new_output(Shape{M, N});
    const float *pa = cptr(a), *pb = cptr(b);
    float* pc = c.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (bf16)  // bf16 products, fp32 sums (gemm_bf16.hpp): A(i, k), B(k, j) at these element strides
            k::gemm_bf16(M, N, K, pa, trans_a ? 1 : K, trans_a ? M : 1, pb, trans_b ? 1 : N, trans_b ? K : 1, pc, N,
                         bias, relu);
        else
            k::matmul_forward(pa, pb, bias, pc, M, N, K, trans_a, trans_b, relu);
    }
    return std::move(c);
}

py::tuple matmul_backward(py::handle g_obj, py::handle a_obj, py::handle b_obj,
                          std::optional<py::handle> out_obj, bool trans_a, bool trans_b, bool want_bias,
                          bool want_a, bool bf16) {
    py::array g = checked(g_obj, "grad_out", 2), a = checked(a_obj, "a", 2), b = checked(b_obj, "b", 2);
    int M = trans_a ? dim(a, 1) : dim(a, 0), K = trans_a ? dim(a, 0) : dim(a, 1);
    int KB = trans_b ? dim(b, 1) : dim(b, 0), N = trans_b ? dim(b, 0) : dim(b, 1);
    if (K != KB) throw ShapeError("a and b: inner dimensions differ");
    if (dim(g, 0) != M || dim(g, 1) != N) throw ShapeError("grad_out: expected shape (M, N)");
    const float* out = nullptr;
    py::array out_arr;
    if (out_obj && !out_obj->is_none()) {
        out_arr = checked(*out_obj, "out", 2);
        same_shape(g, "grad_out", out_arr, "out");
        out = cptr(out_arr);
    }
    FloatArray db = new_output(Shape{b.shape(0), b.shape(1)});
    py::object da_obj = py::none(), dbias = py::none();
    float* pda = nullptr;  // null: the gradient of a is not computed
    if (want_a) {
        FloatArray arr = new_output(Shape{a.shape(0), a.shape(1)});
        pda = arr.mutable_data();
        da_obj = std::move(arr);
    }
    float* pdbias = nullptr;
    if (want_bias) {
        FloatArray arr = new_output(Shape{N});
        pdbias = arr.mutable_data();
        dbias = std::move(arr);
    }
    const float *pg = cptr(g), *pa = cptr(a), *pb = cptr(b);
    float* pdb = db.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (bf16)  // bf16 products, fp32 sums (gemm_bf16.hpp); refused without AVX512-BF16
            k::matmul_backward_bf16(pg, pa, pb, out, pda, pdb, pdbias, M, N, K, trans_a, trans_b);
        else
            k::matmul_backward(pg, pa, pb, out, pda, pdb, pdbias, M, N, K, trans_a, trans_b);
    }
    return py::make_tuple(da_obj, db, dbias);
}

// ------------------------------------------------------------------------ conv2d
using Pair = deepkern::IntPair;  // 64-bit: geometry.hpp checks the range

k::Conv2dShape conv_shape(const py::array& x, const py::array& w, Pair stride, Pair padding) {
    return deepkern::make_conv2d_shape(dim(x, 0), dim(x, 1), dim(x, 2), dim(x, 3), dim(w, 0), dim(w, 1), dim(w, 2),
                                       dim(w, 3), stride, padding);
}

// The conv bias (OC,) or null; bias_arr keeps it alive
const float* conv_bias(const std::optional<py::handle>& bias_obj, const k::Conv2dShape& s, py::array& bias_arr) {
    if (!bias_obj || bias_obj->is_none()) return nullptr;
    bias_arr = checked(*bias_obj, "bias", 1);
    if (dim(bias_arr, 0) != s.OC) throw ShapeError("bias: expected one value per output channel");
    return cptr(bias_arr);
}

// bf16: products of bf16-rounded operands, fp32 sums (conv2d_bf16.hpp; refused without AVX512-BF16)
py::array conv2d(py::handle x_obj, py::handle w_obj, std::optional<py::handle> bias_obj,
                 Pair stride, Pair padding, bool bf16) {
    py::array x = checked(x_obj, "x", 4), w = checked(w_obj, "w", 4);
    k::Conv2dShape s = conv_shape(x, w, stride, padding);
    py::array bias_arr;
    const float* bias = conv_bias(bias_obj, s, bias_arr);
    FloatArray y = new_output(Shape{s.N, s.OC, s.OH, s.OW});
    const float *px = cptr(x), *pw = cptr(w);
    float* py_ = y.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (bf16)
            k::conv2d_forward_bf16(s, px, pw, bias, py_);
        else
            k::conv2d_forward(s, px, pw, bias, py_);
    }
    return std::move(y);
}

// The conv gradients' outputs: gw always, gx and gb when wanted (else None and a null pointer)
struct ConvGrads {
    FloatArray gw;
    py::object gx = py::none(), gb = py::none();
    float *pgx = nullptr, *pgw = nullptr, *pgb = nullptr;

    ConvGrads(const k::Conv2dShape& s, bool want_bias, bool want_input)
        : gw(new_output(Shape{s.OC, s.C, s.KH, s.KW})), pgw(gw.mutable_data()) {
        if (want_input) {
            FloatArray arr = new_output(Shape{s.N, s.C, s.H, s.W});
            pgx = arr.mutable_data();
            gx = std::move(arr);
        }
        if (want_bias) {
            FloatArray arr = new_output(Shape{s.OC});
            pgb = arr.mutable_data();
            gb = std::move(arr);
        }
    }
    py::tuple result() { return py::make_tuple(gx, gw, gb); }
};

// want_input false: no input gradient (None; the kernel skips the dX GEMM and col2im)
py::tuple conv2d_backward(py::handle g_obj, py::handle x_obj, py::handle w_obj, Pair stride, Pair padding,
                          bool want_bias, bool want_input, bool bf16) {
    py::array x = checked(x_obj, "x", 4), w = checked(w_obj, "w", 4), g = checked(g_obj, "grad_out", 4);
    k::Conv2dShape s = conv_shape(x, w, stride, padding);
    if (dim(g, 0) != s.N || dim(g, 1) != s.OC || dim(g, 2) != s.OH || dim(g, 3) != s.OW)
        throw ShapeError("grad_out: expected shape (N, OC, OH, OW)");
    ConvGrads d(s, want_bias, want_input);
    const float *pg = cptr(g), *px = cptr(x), *pw = cptr(w);
    {
        py::gil_scoped_release nogil;
        if (bf16)
            k::conv2d_backward_bf16(s, pg, px, pw, d.pgx, d.pgw, d.pgb);
        else
            k::conv2d_backward(s, pg, px, pw, d.pgx, d.pgw, d.pgb);
    }
    return d.result();
}

// ------------------------------------------------------------------------ fused conv + relu (+ pool)
using RouteArray = py::array_t<uint8_t, py::array::c_style>;

// y's shape: (N, OC, OH, OW), or (N, OC, OH / 2, OW / 2) with the 2x2 pool
Shape fused_shape(const k::Conv2dShape& s, bool pool) {
    return pool ? Shape{s.N, s.OC, s.OH / 2, s.OW / 2} : Shape{s.N, s.OC, s.OH, s.OW};
}

bool has_shape(const py::array& a, const Shape& shape) {
    return a.ndim() == static_cast<py::ssize_t>(shape.size()) && std::equal(shape.begin(), shape.end(), a.shape());
}

// (y, route): route is None without the pool
py::tuple conv2d_relu(py::handle x_obj, py::handle w_obj, std::optional<py::handle> bias_obj, Pair stride,
                      Pair padding, bool pool, bool bf16) {
    py::array x = checked(x_obj, "x", 4), w = checked(w_obj, "w", 4);
    k::Conv2dShape s = conv_shape(x, w, stride, padding);
    py::array bias_arr;
    const float* bias = conv_bias(bias_obj, s, bias_arr);
    const Shape shape = fused_shape(s, pool);
    FloatArray y = new_output(shape);
    py::object route_obj = pool ? py::object(RouteArray(shape)) : py::none();
    uint8_t* route = pool ? static_cast<uint8_t*>(py::cast<py::array>(route_obj).mutable_data()) : nullptr;
    const float *px = cptr(x), *pw = cptr(w);
    float* py_ = y.mutable_data();
    {
        py::gil_scoped_release nogil;
        k::conv2d_relu_forward(s, pool, px, pw, bias, py_, route, bf16);
    }
    return py::make_tuple(std::move(y), route_obj);
}

// out: the forward's y (used without the pool); route: the forward's route (with the pool, which it selects)
py::tuple conv2d_relu_backward(py::handle g_obj, py::handle x_obj, py::handle w_obj, std::optional<py::handle> out_obj,
                               std::optional<py::handle> route_obj, Pair stride, Pair padding, bool want_bias,
                               bool want_input, bool bf16) {
    py::array x = checked(x_obj, "x", 4), w = checked(w_obj, "w", 4), g = checked(g_obj, "grad_out", 4);
    k::Conv2dShape s = conv_shape(x, w, stride, padding);
    const bool pool = route_obj && !route_obj->is_none();
    const Shape shape = fused_shape(s, pool);
    if (!has_shape(g, shape)) throw ShapeError("grad_out: expected the shape of the forward's output");
    py::array out, route;
    if (pool) {
        if (!py::isinstance<RouteArray>(*route_obj)) throw py::type_error("route: expected a uint8 numpy.ndarray");
        route = py::reinterpret_borrow<py::array>(*route_obj);
        if (!(route.flags() & py::array::c_style) || !has_shape(route, shape))
            throw ShapeError("route: expected a C-contiguous array of the forward's output shape");
    } else {
        if (!out_obj || out_obj->is_none()) throw ShapeError("out: the forward's output is needed without a route");
        out = checked(*out_obj, "out", 4);
        if (!has_shape(out, shape)) throw ShapeError("out: expected the shape of grad_out");
    }
    ConvGrads d(s, want_bias, want_input);
    const float *pg = cptr(g), *px = cptr(x), *pw = cptr(w), *pout = pool ? nullptr : cptr(out);
    const auto* proute = pool ? static_cast<const uint8_t*>(route.data()) : nullptr;
    {
        py::gil_scoped_release nogil;
        k::conv2d_relu_backward(s, pool, pg, pout, proute, px, pw, d.pgx, d.pgw, d.pgb, bf16);
    }
    return d.result();
}

// ------------------------------------------------------------------------ pooling
k::Pool2dShape pool_shape(const py::array& x, Pair kernel, Pair stride, Pair padding) {
    return deepkern::make_pool2d_shape(dim(x, 0), dim(x, 1), dim(x, 2), dim(x, 3), kernel, stride, padding);
}

template <void (*Forward)(const k::Pool2dShape&, const float*, float*)>
py::array pool_forward(py::handle x_obj, Pair kernel, Pair stride, Pair padding) {
    py::array x = checked(x_obj, "x", 4);
    k::Pool2dShape s = pool_shape(x, kernel, stride, padding);
    FloatArray y = new_output(Shape{s.N, s.C, s.OH, s.OW});
    const float* px = cptr(x);
    float* py_ = y.mutable_data();
    {
        py::gil_scoped_release nogil;
        Forward(s, px, py_);
    }
    return std::move(y);
}

k::Pool2dShape pool_grad_shape(const py::array& g, const py::array& x, Pair kernel, Pair stride, Pair padding) {
    k::Pool2dShape s = pool_shape(x, kernel, stride, padding);
    if (dim(g, 0) != s.N || dim(g, 1) != s.C || dim(g, 2) != s.OH || dim(g, 3) != s.OW)
        throw ShapeError("grad_out: expected shape (N, C, OH, OW)");
    return s;
}

py::array max_pool2d_backward(py::handle g_obj, py::handle x_obj, Pair kernel, Pair stride, Pair padding) {
    py::array g = checked(g_obj, "grad_out", 4), x = checked(x_obj, "x", 4);
    k::Pool2dShape s = pool_grad_shape(g, x, kernel, stride, padding);
    FloatArray gx = new_output(Shape{s.N, s.C, s.H, s.W});
    const float *pg = cptr(g), *px = cptr(x);
    float* pgx = gx.mutable_data();
    {
        py::gil_scoped_release nogil;
        k::max_pool2d_backward(s, pg, px, pgx);
    }
    return std::move(gx);
}

py::array avg_pool2d_backward(py::handle g_obj, py::handle x_obj, Pair kernel, Pair stride, Pair padding) {
    py::array g = checked(g_obj, "grad_out", 4), x = checked(x_obj, "x", 4);
    k::Pool2dShape s = pool_grad_shape(g, x, kernel, stride, padding);
    FloatArray gx = new_output(Shape{s.N, s.C, s.H, s.W});
    const float* pg = cptr(g);
    float* pgx = gx.mutable_data();
    {
        py::gil_scoped_release nogil;
        k::avg_pool2d_backward(s, pg, pgx);
    }
    return std::move(gx);
}

// ------------------------------------------------------------------------ activations
Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

py::array relu(py::handle x_obj) {
    py::array x = checked(x_obj, "x");
    FloatArray y = new_output(shape_of(x));
    const float* px = cptr(x);
    float* py_ = y.mutable_data();
    int64_t n = x.size();
    {
        py::gil_scoped_release nogil;
        k::relu_forward(px, py_, n);
    }
    return std::move(y);
}

py::array relu_backward(py::handle g_obj, py::handle x_obj) {
    py::array g = checked(g_obj, "grad_out"), x = checked(x_obj, "x");
    same_shape(x, "x", g, "grad_out");
    FloatArray gx = new_output(shape_of(x));
    const float *pg = cptr(g), *px = cptr(x);
    float* pgx = gx.mutable_data();
    int64_t n = x.size();
    {
        py::gil_scoped_release nogil;
        k::relu_backward(pg, px, pgx, n);
    }
    return std::move(gx);
}

// (outer, dim, inner) view of an array around axis
void split_axis(const py::array& x, int axis, int64_t& outer, int64_t& d, int64_t& inner) {
    if (axis < 0 || axis >= x.ndim()) throw ShapeError("axis: out of range");
    outer = 1; inner = 1; d = x.shape(axis);
    for (int i = 0; i < axis; ++i) outer *= x.shape(i);
    for (int i = axis + 1; i < x.ndim(); ++i) inner *= x.shape(i);
}

template <void (*Forward)(const float*, float*, int64_t, int64_t, int64_t)>
py::array softmax_like(py::handle x_obj, int axis) {
    py::array x = checked(x_obj, "x");
    int64_t outer, d, inner;
    split_axis(x, axis, outer, d, inner);
    FloatArray y = new_output(shape_of(x));
    const float* px = cptr(x);
    float* py_ = y.mutable_data();
    if (y.size() > 0) {
        py::gil_scoped_release nogil;
        Forward(px, py_, outer, d, inner);
    }
    return std::move(y);
}

template <void (*Backward)(const float*, const float*, float*, int64_t, int64_t, int64_t)>
py::array softmax_like_backward(py::handle g_obj, py::handle y_obj, int axis) {
    py::array g = checked(g_obj, "grad_out"), y = checked(y_obj, "y");
    same_shape(y, "y", g, "grad_out");
    int64_t outer, d, inner;
    split_axis(y, axis, outer, d, inner);
    FloatArray gx = new_output(shape_of(y));
    const float *pg = cptr(g), *py_ = cptr(y);
    float* pgx = gx.mutable_data();
    if (gx.size() > 0) {
        py::gil_scoped_release nogil;
        Backward(pg, py_, pgx, outer, d, inner);
    }
    return std::move(gx);
}

// ------------------------------------------------------------------------ loss
py::array checked_labels(py::handle obj, int N, int C) {
    if (!py::isinstance<py::array>(obj)) throw py::type_error("labels: expected a numpy.ndarray");
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (!arr.dtype().equal(py::dtype::of<int64_t>())) throw py::type_error("labels: expected dtype int64");
    if (arr.ndim() != 1 || arr.shape(0) != N) throw ShapeError("labels: expected shape (N,)");
    if (!(arr.flags() & py::array::c_style)) throw ShapeError("labels: expected a C-contiguous array");
    const int64_t* p = static_cast<const int64_t*>(arr.data());
    for (int i = 0; i < N; ++i)
        if (p[i] < 0 || p[i] >= C)
            throw ShapeError("labels: label " + std::to_string(p[i]) + " is out of range for " +
                             std::to_string(C) + " classes");
    return arr;
}

py::array cross_entropy(py::handle logits_obj, py::handle labels_obj) {
    py::array logits = checked(logits_obj, "logits", 2);
    int N = dim(logits, 0), C = dim(logits, 1);
    py::array labels = checked_labels(labels_obj, N, C);
    const float* pl = cptr(logits);
    const int64_t* py_ = static_cast<const int64_t*>(labels.data());
    // the mean over an empty batch is NaN, as in NumPy and PyTorch
    float loss = std::numeric_limits<float>::quiet_NaN();
    if (N > 0) {
        py::gil_scoped_release nogil;
        loss = k::cross_entropy_forward(pl, py_, N, C);
    }
    FloatArray out = new_output(Shape{});
    *out.mutable_data() = loss;
    return std::move(out);
}

py::array cross_entropy_backward(py::handle logits_obj, py::handle labels_obj, float grad) {
    py::array logits = checked(logits_obj, "logits", 2);
    int N = dim(logits, 0), C = dim(logits, 1);
    py::array labels = checked_labels(labels_obj, N, C);
    FloatArray gl = new_output(Shape{N, C});
    const float* pl = cptr(logits);
    const int64_t* py_ = static_cast<const int64_t*>(labels.data());
    float* pg = gl.mutable_data();
    if (gl.size() > 0) {
        py::gil_scoped_release nogil;
        k::cross_entropy_backward(pl, py_, pg, N, C, grad);
    }
    return std::move(gl);
}

// ------------------------------------------------------------------------ batch norm
// x (N, C, *spatial) seen as (N, C, S)
void channel_dims(const py::array& x, int64_t& N, int64_t& C, int64_t& S) {
    if (x.ndim() < 2) throw ShapeError("x: expected (N, C, ...) with at least 2 dimensions");
    N = x.shape(0);
    C = x.shape(1);
    S = 1;
    for (py::ssize_t i = 2; i < x.ndim(); ++i) S *= x.shape(i);
}

// A (C,) float32 vector, or nothing when absent
std::optional<py::array> channel_vector(const std::optional<py::handle>& obj, const char* name, int64_t C,
                                        bool writable = false) {
    if (!obj || obj->is_none()) return std::nullopt;
    py::array v = writable ? checked_writable(*obj, name) : checked(*obj, name);
    if (v.ndim() != 1 || v.shape(0) != C)
        throw ShapeError(std::string(name) + ": expected shape (C,) with C = x.shape[1]");
    return v;
}

const float* opt_cptr(const std::optional<py::array>& a) { return a ? cptr(*a) : nullptr; }
float* opt_mptr(std::optional<py::array>& a) { return a ? mptr(*a) : nullptr; }

py::tuple batch_norm(py::handle x_obj, std::optional<py::handle> w_obj, std::optional<py::handle> b_obj,
                     std::optional<py::handle> rm_obj, std::optional<py::handle> rv_obj, bool training,
                     float momentum, float eps, bool unbiased) {
    py::array x = checked(x_obj, "x");
    int64_t N, C, S;
    channel_dims(x, N, C, S);
    auto w = channel_vector(w_obj, "weight", C), b = channel_vector(b_obj, "bias", C);
    auto rm = channel_vector(rm_obj, "running_mean", C, training);
    auto rv = channel_vector(rv_obj, "running_var", C, training);
    if (rm.has_value() != rv.has_value()) throw ShapeError("running_mean/running_var: give both or neither");
    if (!training && !rm) throw ShapeError("running_mean/running_var: required when training=False");
    if (training && N * S < 2) throw ShapeError("x: expected more than 1 value per channel when training");
    if (!(eps > 0.0f)) throw ShapeError("eps: expected a value > 0");
    FloatArray y = new_output(shape_of(x));
    FloatArray mean = new_output(Shape{static_cast<py::ssize_t>(C)}), invstd = new_output(Shape{static_cast<py::ssize_t>(C)});
    const float *px = cptr(x), *pw = opt_cptr(w), *pb = opt_cptr(b);
    float *prm = opt_mptr(rm), *prv = opt_mptr(rv);
    float *py_ = y.mutable_data(), *pm = mean.mutable_data(), *pi = invstd.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (training)
            k::batch_norm_forward_train(px, pw, pb, prm, prv, py_, pm, pi, N, C, S, momentum, eps, unbiased);
        else
            k::batch_norm_forward_eval(px, pw, pb, prm, prv, py_, pm, pi, N, C, S, eps);
    }
    return py::make_tuple(y, mean, invstd);
}

py::tuple batch_norm_backward(py::handle g_obj, py::handle x_obj, std::optional<py::handle> w_obj,
                              py::handle mean_obj, py::handle invstd_obj, bool training, bool want_affine) {
    py::array g = checked(g_obj, "grad_out"), x = checked(x_obj, "x");
    same_shape(x, "x", g, "grad_out");
    int64_t N, C, S;
    channel_dims(x, N, C, S);
    auto w = channel_vector(w_obj, "weight", C);
    auto mean_v = channel_vector(mean_obj, "mean", C), invstd_v = channel_vector(invstd_obj, "invstd", C);
    if (!mean_v || !invstd_v) throw py::type_error("mean/invstd: expected the arrays batch_norm returned");
    py::array mean = *mean_v, invstd = *invstd_v;
    FloatArray gx = new_output(shape_of(x));
    py::object gw = py::none(), gb = py::none();
    float *pgw = nullptr, *pgb = nullptr;
    if (want_affine) {
        FloatArray aw = new_output(Shape{static_cast<py::ssize_t>(C)}), ab = new_output(Shape{static_cast<py::ssize_t>(C)});
        pgw = aw.mutable_data();
        pgb = ab.mutable_data();
        gw = std::move(aw);
        gb = std::move(ab);
    }
    const float *pg = cptr(g), *px = cptr(x), *pw = opt_cptr(w), *pm = cptr(mean), *pi = cptr(invstd);
    float* pgx = gx.mutable_data();
    {
        py::gil_scoped_release nogil;
        k::batch_norm_backward(pg, px, pw, pm, pi, pgx, pgw, pgb, N, C, S, training);
    }
    return py::make_tuple(gx, gw, gb);
}

py::dict cpu_features() {
    __builtin_cpu_init();
    py::dict d;
    d["avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
    d["fma"] = static_cast<bool>(__builtin_cpu_supports("fma"));
    d["avx512f"] = static_cast<bool>(__builtin_cpu_supports("avx512f"));
    d["gemm_variant"] = k::gemm_variant();
    return d;
}

}  // namespace

namespace deepkern::cpu {
void bind_bf16(py::module_& m);   // bind_bf16.cpp
void bind_optim(py::module_& m);  // bind_optim.cpp
}

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "deepkern C++ CPU kernels (own thread pool, AVX-512/AVX2 dispatched at run time)";
    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("bias").none(true), py::arg("relu"),
          py::arg("trans_a"), py::arg("trans_b"), py::arg("bf16") = false);
    m.def("matmul_backward", &matmul_backward, py::arg("grad_out"), py::arg("a"), py::arg("b"),
          py::arg("out").none(true), py::arg("trans_a"), py::arg("trans_b"), py::arg("want_bias"),
          py::arg("want_a") = true, py::arg("bf16") = false);
    m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("bias").none(true), py::arg("stride"),
          py::arg("padding"), py::arg("bf16") = false);
    m.def("conv2d_backward", &conv2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("w"),
          py::arg("stride"), py::arg("padding"), py::arg("want_bias"), py::arg("want_input") = true,
          py::arg("bf16") = false);
    m.def("conv2d_relu", &conv2d_relu, py::arg("x"), py::arg("w"), py::arg("bias").none(true), py::arg("stride"),
          py::arg("padding"), py::arg("pool"), py::arg("bf16") = false,
          "(relu(conv2d(x, w, bias)) [max-pooled 2x2], route or None): one pass over the conv output");
    m.def("conv2d_relu_backward", &conv2d_relu_backward, py::arg("grad_out"), py::arg("x"), py::arg("w"),
          py::arg("out").none(true), py::arg("route").none(true), py::arg("stride"), py::arg("padding"),
          py::arg("want_bias"), py::arg("want_input") = true, py::arg("bf16") = false);
    m.def("max_pool2d", &pool_forward<k::max_pool2d_forward>, py::arg("x"), py::arg("kernel"),
          py::arg("stride"), py::arg("padding"));
    m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("kernel"),
          py::arg("stride"), py::arg("padding"));
    m.def("avg_pool2d", &pool_forward<k::avg_pool2d_forward>, py::arg("x"), py::arg("kernel"),
          py::arg("stride"), py::arg("padding"));
    m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("kernel"),
          py::arg("stride"), py::arg("padding"));
    m.def("relu", &relu, py::arg("x"));
    m.def("relu_backward", &relu_backward, py::arg("grad_out"), py::arg("x"));
    m.def("softmax", &softmax_like<k::softmax_forward>, py::arg("x"), py::arg("axis"));
    m.def("softmax_backward", &softmax_like_backward<k::softmax_backward>, py::arg("grad_out"), py::arg("y"),
          py::arg("axis"));
    m.def("log_softmax", &softmax_like<k::log_softmax_forward>, py::arg("x"), py::arg("axis"));
    m.def("log_softmax_backward", &softmax_like_backward<k::log_softmax_backward>, py::arg("grad_out"),
          py::arg("y"), py::arg("axis"));
    m.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("labels"));
    m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("logits"), py::arg("labels"),
          py::arg("grad"));
    m.def("batch_norm", &batch_norm, py::arg("x"), py::arg("weight").none(true), py::arg("bias").none(true),
          py::arg("running_mean").none(true), py::arg("running_var").none(true), py::arg("training"),
          py::arg("momentum"), py::arg("eps"), py::arg("unbiased"));
    m.def("batch_norm_backward", &batch_norm_backward, py::arg("grad_out"), py::arg("x"),
          py::arg("weight").none(true), py::arg("mean"), py::arg("invstd"), py::arg("training"),
          py::arg("want_affine"));
    m.def("host_cache_info", []() {
              auto& cache = deepkern::HostCache::instance();
              py::dict d;
              d["cached_bytes"] = cache.cached_bytes();
              d["cached_buffers"] = cache.cached_buffers();
              d["limit_bytes"] = cache.limit();
              d["hits"] = cache.hits();
              d["misses"] = cache.misses();
              return d;
          }, "Bytes and buffers held by the cache of large output buffers, its limit, and hit/miss counts");
    m.def("set_host_cache_limit", [](size_t bytes) { deepkern::HostCache::instance().set_limit(bytes); },
          py::arg("bytes"), "Most bytes of freed output buffers kept for reuse (0 turns the cache off)");
    m.def("empty_host_cache", []() { deepkern::HostCache::instance().clear(); },
          "Return every cached output buffer to the operating system");
    m.def("cpu_features", &cpu_features, "CPU instruction sets seen at run time and the GEMM variant in use");
    m.def("num_threads", &deepkern::max_threads, "Threads the kernels use (the calling thread included)");
    m.def("set_num_threads", &deepkern::set_max_threads, py::arg("n"), "Set the threads the kernels use (>= 1)");
    m.def("parallel_runtime", []() { return std::string(deepkern::runtime_name()); },
          "Name of the thread pool the kernels run on");
    m.def("_pool_selftest", &deepkern::cpu::pool_selftest, py::arg("jobs"), py::arg("seed") = 0,
          py::call_guard<py::gil_scoped_release>(),
          "Test hook: run short jobs back to back on the pool; returns chunks not run exactly once");
    m.def("gemm_variant", &k::gemm_variant);
    m.def("simd_variant", &k::simd_variant, "ISA variant of the relu/softmax/batch-norm/optimizer kernels");
    m.def("set_simd_variant", &k::set_simd_variant, py::arg("name"),
          "Force the relu/softmax/batch-norm/optimizer kernels: 'avx512', 'avx2', 'generic' or 'auto'");
    m.def("set_gemm_variant", &k::set_gemm_variant, py::arg("name"),
          "Force the GEMM micro-kernel: 'avx512', 'avx2', 'scalar' or 'auto'");
    deepkern::cpu::bind_bf16(m);
    deepkern::cpu::bind_optim(m);
}
