// Errors cross the boundary as C++ exceptions; pybind11 turns them into Python ones.
#pragma once
#include <stdexcept>
#include <string>

namespace deepkern {

// Becomes ValueError in Python (pybind11 maps std::invalid_argument to ValueError).
struct ShapeError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

}  // namespace deepkern
