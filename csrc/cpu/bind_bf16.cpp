// Python bindings of the bf16 GEMM (gemm_bf16.hpp); bind_cpu.cpp calls bind_bf16(m).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "cpu/gemm_bf16.hpp"

namespace py = pybind11;

namespace deepkern::cpu {
namespace {

py::array_t<float> float_matrix(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array_t<float>>(obj) || py::reinterpret_borrow<py::array>(obj).ndim() != 2)
        throw py::type_error(std::string(name) + ": expected a 2-D float32 numpy.ndarray");
    return py::reinterpret_borrow<py::array_t<float>>(obj);
}

// (M, N) = bf16(op(a)) @ bf16(op(b)); op = transpose when trans_*. Any strides (views read in place).
py::array gemm_bf16_py(py::handle a_obj, py::handle b_obj, bool trans_a, bool trans_b,
                                std::optional<py::handle> bias_obj, bool relu) {
    py::array_t<float> a = float_matrix(a_obj, "a"), b = float_matrix(b_obj, "b");
    // element strides of A(i, k) and B(k, j)
    const int64_t as0 = a.strides(0) / 4, as1 = a.strides(1) / 4, bs0 = b.strides(0) / 4, bs1 = b.strides(1) / 4;
    const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
    const int64_t KB = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
    if (K != KB) throw std::invalid_argument("a and b: inner dimensions differ");
    py::array_t<float> bias_arr;
    const float* bias = nullptr;
    if (bias_obj && !bias_obj->is_none()) {
        if (!py::isinstance<py::array_t<float>>(*bias_obj))
            throw py::type_error("bias: expected a float32 numpy.ndarray");
        bias_arr = py::reinterpret_borrow<py::array_t<float>>(*bias_obj);
        if (bias_arr.ndim() != 1 || bias_arr.shape(0) != N || (N > 1 && bias_arr.strides(0) != 4))
            throw std::invalid_argument("bias: expected a contiguous (N,) array, one value per output column");
        bias = bias_arr.data();
    }
    require_bf16();   // before allocating: the message says why
    py::array_t<float> c({M, N});
    const float *pa = a.data(), *pb = b.data();
    float* pc = c.mutable_data();
    {
        py::gil_scoped_release nogil;
        gemm_bf16(M, N, K, pa, trans_a ? as1 : as0, trans_a ? as0 : as1, pb, trans_b ? bs1 : bs0,
                  trans_b ? bs0 : bs1, pc, N, bias, relu);
    }
    return std::move(c);
}

}  // namespace

void bind_bf16(py::module_& m) {
    m.def("gemm_bf16", &gemm_bf16_py, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
          py::arg("trans_b") = false, py::arg("bias") = py::none(), py::arg("relu") = false,
          "[relu](bf16(op(a)) @ bf16(op(b)) [+ bias]), fp32 sums (AVX512-BF16); inputs rounded "
          "to nearest even");
    m.def("bf16_available", &bf16_available, "bf16 GEMM usable: the CPU has avx512_bf16 and it is not switched off");
    m.def("bf16_cpu_supports", &bf16_cpu_supports, "the CPU has AVX512-BF16");
    m.def("set_bf16_enabled", &set_bf16_enabled, py::arg("on"),
          "Switch the bf16 GEMM off (as on a CPU without avx512_bf16) or back on");
}

}  // namespace deepkern::cpu
