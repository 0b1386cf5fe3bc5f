// Python bindings of the fused optimizer updates (optim.hpp); bind_cpu.cpp calls bind_optim(m).
//   sgd_update / adam_update / rmsprop_update        one parameter
//   sgd_update_many / adam_update_many / ...          lists of parameters in one call (the
//                                                      optimizers' step: one GIL release, one
//                                                      split of all their elements over the threads)
// Each parameter's arrays are checked as a group: float32, C-contiguous, aligned; param and state
// writable; every array param's shape; no two of them sharing memory (an in-place update would
// then depend on the order of its loop). All groups are checked before any is updated.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/errors.hpp"
#include "cpu/bind_checks.hpp"
#include "cpu/optim.hpp"

namespace py = pybind11;

namespace deepkern::cpu {
namespace {

using bind::checked;
using bind::checked_writable;
using bind::no_overlap;
using bind::same_shape;

// One update's arguments: the parameter first, then its gradient, then its state buffers. An
// argument of a *_many call is element `index` of the list `name` (index -1: a single update).
struct Arg {
    py::handle obj;
    const char* name;
    int64_t index = -1;
};

// The group's arrays in the order given, checked (see the top of this file). The names that
// errors carry ("grads[3]") are only built when a check fails: the step's usual path then costs
// no more per array than a single update's.
std::vector<py::array> checked_group(const std::vector<Arg>& args, bool indexed_names = false) {
    std::vector<std::string> names;
    for (const Arg& a : args)
        names.push_back(indexed_names && a.index >= 0 ? std::string(a.name) + "[" + std::to_string(a.index) + "]"
                                                      : std::string(a.name));
    try {
        std::vector<py::array> arrs;
        arrs.reserve(args.size());
        for (size_t i = 0; i < args.size(); ++i)  // the gradient (i == 1) is only read
            arrs.push_back(i == 1 ? checked(args[i].obj, names[i].c_str())
                                  : checked_writable(args[i].obj, names[i].c_str()));
        for (size_t i = 1; i < arrs.size(); ++i) same_shape(arrs[0], names[0].c_str(), arrs[i], names[i].c_str());
        for (size_t i = 0; i < arrs.size(); ++i)
            for (size_t j = i + 1; j < arrs.size(); ++j)
                no_overlap(arrs[i], names[i].c_str(), arrs[j], names[j].c_str());
        return arrs;
    } catch (const std::exception&) {
        if (indexed_names || args.empty() || args[0].index < 0) throw;
        return checked_group(args, true);  // fails the same way, now naming the list elements
    }
}

float* mptr(py::array& a) { return static_cast<float*>(a.mutable_data()); }

// A parameter's span over its checked group [param, grad, s0?, s1?].
ParamSpan span_of(std::vector<py::array>& g) {
    ParamSpan s{mptr(g[0]), static_cast<const float*>(g[1].data()), nullptr, nullptr, g[0].size()};
    if (g.size() > 2) s.s0 = mptr(g[2]);
    if (g.size() > 3) s.s1 = mptr(g[3]);
    return s;
}

// True when no array of one group shares memory with an array of another (within a group it
// is already refused): then the threads may update all parameters at once.
bool groups_disjoint(const std::vector<std::vector<py::array>>& groups) {
    std::vector<std::pair<const char*, const char*>> ranges;
    for (const auto& g : groups)
        for (const auto& a : g)
            if (a.nbytes() > 0) {
                const char* lo = static_cast<const char*>(a.data());
                ranges.emplace_back(lo, lo + a.nbytes());
            }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
        if (ranges[i].first < ranges[i - 1].second) return false;
    return true;
}

// The lists of a *_many call as groups: lists[0] the params, lists[1] the grads, then the
// state lists (an absent one: py::none()). Every list has the params' length.
std::vector<std::vector<py::array>> checked_groups(const std::vector<std::pair<py::handle, const char*>>& lists) {
    std::vector<py::sequence> seqs;
    for (const auto& [obj, name] : lists) {
        if (obj.is_none()) continue;
        if (!py::isinstance<py::sequence>(obj)) throw py::type_error(std::string(name) + ": expected a list of arrays");
        seqs.push_back(py::reinterpret_borrow<py::sequence>(obj));
        if (seqs.back().size() != seqs.front().size())
            throw ShapeError(std::string(name) + ": expected " + std::to_string(seqs.front().size()) +
                             " arrays (one per parameter), got " + std::to_string(seqs.back().size()));
    }
    std::vector<const char*> names;
    for (const auto& l : lists)
        if (!l.first.is_none()) names.push_back(l.second);
    std::vector<std::vector<py::array>> groups;
    std::vector<py::object> items(seqs.size());   // holds each list's element i while it is checked
    std::vector<Arg> args(seqs.size());
    for (size_t i = 0; i < seqs.front().size(); ++i) {
        for (size_t l = 0; l < seqs.size(); ++l) {
            items[l] = seqs[l][i];
            args[l] = {items[l], names[l], static_cast<int64_t>(i)};
        }
        groups.push_back(checked_group(args));
    }
    return groups;
}

std::vector<ParamSpan> spans_of(std::vector<std::vector<py::array>>& groups) {
    std::vector<ParamSpan> spans;
    for (auto& g : groups) spans.push_back(span_of(g));
    return spans;
}

// ------------------------------------------------------------------------ one parameter
void sgd_update_py(py::handle p_obj, py::handle g_obj, std::optional<py::handle> v_obj, float lr,
                   float momentum, float weight_decay, bool nesterov) {
    const bool has_v = v_obj && !v_obj->is_none();
    if (momentum != 0.0f && !has_v) throw ShapeError("velocity: required when momentum > 0");
    std::vector<Arg> args{{p_obj, "param"}, {g_obj, "grad"}};
    if (has_v) args.push_back({*v_obj, "velocity"});
    auto g = checked_group(args);
    ParamSpan s = span_of(g);
    if (momentum == 0.0f) s.s0 = nullptr;  // plain SGD leaves a given velocity untouched (as the reference)
    py::gil_scoped_release nogil;
    sgd_update(s.p, s.grad, s.s0, s.n, lr, momentum, weight_decay, nesterov);
}

void adam_update_py(py::handle p_obj, py::handle g_obj, py::handle m_obj, py::handle v_obj, int64_t step,
                    float lr, float beta1, float beta2, float eps, float weight_decay) {
    auto g = checked_group({{p_obj, "param"}, {g_obj, "grad"}, {m_obj, "m"}, {v_obj, "v"}});
    if (step < 1) throw ShapeError("step: expected >= 1");
    const ParamSpan s = span_of(g);
    py::gil_scoped_release nogil;
    adam_update(s.p, s.grad, s.s0, s.s1, s.n, step, lr, beta1, beta2, eps, weight_decay);
}

void rmsprop_update_py(py::handle p_obj, py::handle g_obj, py::handle s_obj, float lr, float alpha, float eps,
                       float weight_decay) {
    auto g = checked_group({{p_obj, "param"}, {g_obj, "grad"}, {s_obj, "square_avg"}});
    const ParamSpan s = span_of(g);
    py::gil_scoped_release nogil;
    rmsprop_update(s.p, s.grad, s.s0, s.n, lr, alpha, eps, weight_decay);
}

// ------------------------------------------------------------------------ lists of parameters
void sgd_update_many_py(py::handle params, py::handle grads, py::handle velocities, float lr, float momentum,
                        float weight_decay, bool nesterov) {
    if (momentum != 0.0f && velocities.is_none()) throw ShapeError("velocities: required when momentum > 0");
    auto groups = checked_groups({{params, "params"}, {grads, "grads"}, {velocities, "velocities"}});
    std::vector<ParamSpan> spans = spans_of(groups);
    if (momentum == 0.0f)
        for (auto& s : spans) s.s0 = nullptr;
    const bool disjoint = groups_disjoint(groups);
    py::gil_scoped_release nogil;
    sgd_update_many(spans.data(), static_cast<int64_t>(spans.size()), disjoint, lr, momentum, weight_decay,
                    nesterov);
}

void adam_update_many_py(py::handle params, py::handle grads, py::handle ms, py::handle vs, int64_t step,
                         float lr, float beta1, float beta2, float eps, float weight_decay) {
    if (ms.is_none() || vs.is_none()) throw py::type_error("ms, vs: expected lists of arrays");
    auto groups = checked_groups({{params, "params"}, {grads, "grads"}, {ms, "ms"}, {vs, "vs"}});
    if (step < 1) throw ShapeError("step: expected >= 1");
    const std::vector<ParamSpan> spans = spans_of(groups);
    const bool disjoint = groups_disjoint(groups);
    py::gil_scoped_release nogil;
    adam_update_many(spans.data(), static_cast<int64_t>(spans.size()), disjoint, step, lr, beta1, beta2, eps,
                     weight_decay);
}

void rmsprop_update_many_py(py::handle params, py::handle grads, py::handle square_avgs, float lr, float alpha,
                            float eps, float weight_decay) {
    if (square_avgs.is_none()) throw py::type_error("square_avgs: expected a list of arrays");
    auto groups = checked_groups({{params, "params"}, {grads, "grads"}, {square_avgs, "square_avgs"}});
    const std::vector<ParamSpan> spans = spans_of(groups);
    const bool disjoint = groups_disjoint(groups);
    py::gil_scoped_release nogil;
    rmsprop_update_many(spans.data(), static_cast<int64_t>(spans.size()), disjoint, lr, alpha, eps, weight_decay);
}

}  // namespace

void bind_optim(py::module_& m) {
    m.def("sgd_update", &sgd_update_py, py::arg("param"), py::arg("grad"), py::arg("velocity").none(true),
          py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"));
    m.def("adam_update", &adam_update_py, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"),
          py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"));
    m.def("rmsprop_update", &rmsprop_update_py, py::arg("param"), py::arg("grad"), py::arg("square_avg"),
          py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"));
    m.def("sgd_update_many", &sgd_update_many_py, py::arg("params"), py::arg("grads"),
          py::arg("velocities").none(true), py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"),
          py::arg("nesterov"), "sgd_update over lists of arrays (velocities None without momentum), in one call");
    m.def("adam_update_many", &adam_update_many_py, py::arg("params"), py::arg("grads"), py::arg("ms"),
          py::arg("vs"), py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), "adam_update over lists of arrays (one step for all), in one call");
    m.def("rmsprop_update_many", &rmsprop_update_many_py, py::arg("params"), py::arg("grads"),
          py::arg("square_avgs"), py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
          "rmsprop_update over lists of arrays, in one call");
}

}  // namespace deepkern::cpu
