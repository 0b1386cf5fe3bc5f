// Argument checks shared by the pybind11 entry points of deepkern._cpu (bind_cpu.cpp and the
// bind_*.cpp files it calls): the second line behind deepkern.ops, so that no call from Python
// can make a kernel read or write out of bounds.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>

#include "common/errors.hpp"

namespace deepkern::bind {

namespace py = pybind11;

// A float32 C-contiguous, float-aligned array of the given rank (-1: any rank); no conversion,
// no copy. Zero-size arrays pass (every entry below handles them); a dimension past 2**31 - 1
// does not (the kernels index one dimension with a 32-bit int, offsets in 64 bits).
inline py::array checked(const py::handle& obj, const char* name, int ndim = -1) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + ": expected a numpy.ndarray");
    auto arr = py::reinterpret_borrow<py::array>(obj);
    // equal(), not is(): an unpickled array carries its own (equivalent) dtype object
    if (!arr.dtype().equal(py::dtype::of<float>()))
        throw py::type_error(std::string(name) + ": expected dtype float32, got " +
                             std::string(py::str(arr.dtype())));
    if (ndim >= 0 && arr.ndim() != ndim)
        throw ShapeError(std::string(name) + ": expected a " + std::to_string(ndim) + "-D array, got " +
                         std::to_string(arr.ndim()) + "-D");
    if (!(arr.flags() & py::array::c_style))
        throw ShapeError(std::string(name) + ": expected a C-contiguous array");
    // the kernels load floats (and vectors of them) through float pointers: a buffer at an odd
    // address would be undefined behaviour, so it is refused rather than read
    if (arr.size() > 0 && reinterpret_cast<std::uintptr_t>(arr.data()) % alignof(float) != 0)
        throw ShapeError(std::string(name) + ": expected a float-aligned buffer (copy the array)");
    for (py::ssize_t i = 0; i < arr.ndim(); ++i)
        if (arr.shape(i) > std::numeric_limits<int>::max())
            throw ShapeError(std::string(name) + ": dimension " + std::to_string(arr.shape(i)) +
                             " exceeds the kernels' 32-bit index limit");
    return arr;
}

inline py::array checked_writable(const py::handle& obj, const char* name) {
    py::array arr = checked(obj, name);
    if (!arr.writeable()) throw ShapeError(std::string(name) + ": array is read-only");
    return arr;
}

// In-place updates read and write these arrays element by element; overlapping ones would make
// the result depend on the order of the loop (and break the kernels' no-alias promise).
inline void no_overlap(const py::array& a, const char* an, const py::array& b, const char* bn) {
    const auto* a0 = static_cast<const char*>(a.data());
    const auto* b0 = static_cast<const char*>(b.data());
    if (a.nbytes() == 0 || b.nbytes() == 0) return;
    if (a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes())
        throw ShapeError(std::string(bn) + ": shares memory with " + an + " (pass separate arrays)");
}

inline void same_shape(const py::array& a, const char* an, const py::array& b, const char* bn) {
    if (a.ndim() != b.ndim()) throw ShapeError(std::string(bn) + ": shape differs from " + an);
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.shape(i) != b.shape(i)) throw ShapeError(std::string(bn) + ": shape differs from " + an);
}

}  // namespace deepkern::bind
