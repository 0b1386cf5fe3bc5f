// pybind11 module deepkern._cuda: device query (kernels bound by the GPU work, P4).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace {

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
}
