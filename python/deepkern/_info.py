"""``dk.info()``: what is built, what is usable, on which hardware."""
from __future__ import annotations

import os
import platform
from typing import Any, Dict

from . import backends
from ._version import __version__


def _cpu_section() -> Dict[str, Any]:
    section: Dict[str, Any] = {"model": platform.processor() or platform.machine(),
                               "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    section["model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from . import _cpu  # type: ignore[attr-defined]
        section.update(_cpu.cpu_features())
        section["threads"] = _cpu.num_threads()
        section["parallel_runtime"] = _cpu.parallel_runtime()
        cache = _cpu.host_cache_info()
        section["host_cache_mb"] = f"{cache['cached_bytes'] / 2**20:.1f} of {cache['limit_bytes'] / 2**20:.0f}"
    except ImportError:
        pass
    return section


def _gpu_section() -> Dict[str, Any]:
    section: Dict[str, Any] = {}
    try:
        from . import _cuda  # type: ignore[attr-defined]
        section["cuda_module"] = "built"
        section.update(_cuda.device_query())
        section["matmul_variant"] = _cuda.matmul_variant()
    except ImportError as exc:
        section["cuda_module"] = f"not built ({exc})"
    try:
        import cupy  # the GPU array library both GPU backends run on

        section["cupy"] = cupy.__version__
        if "devices" not in section:  # no _cuda: ask CuPy for the devices instead
            section.update(_cupy_devices(cupy))
    except ImportError:
        section["cupy"] = "not installed"
    return section


def _cupy_devices(cupy: Any) -> Dict[str, Any]:
    """Device count, versions and per-GPU properties through CuPy; never raises."""
    out: Dict[str, Any] = {"device_count": 0, "devices": []}
    try:
        runtime = cupy.cuda.runtime
        out["runtime_version"] = str(runtime.runtimeGetVersion())
        out["driver_version"] = str(runtime.driverGetVersion())
        out["device_count"] = runtime.getDeviceCount()
        for i in range(out["device_count"]):
            prop = runtime.getDeviceProperties(i)
            name = prop["name"].decode() if isinstance(prop["name"], bytes) else str(prop["name"])
            out["devices"].append({"index": i, "name": name,
                                   "compute_capability": f"{prop['major']}.{prop['minor']}",
                                   "memory_gib": prop["totalGlobalMem"] / 2**30,
                                   "multiprocessors": prop["multiProcessorCount"]})
    except Exception as exc:  # no driver / no GPU: report, never fail dk.info()
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def info() -> Dict[str, Any]:
    """A dict describing the build: each backend ('built and usable' or why not), the
    backend chosen for CPU and GPU arrays, CPU features and the GPUs with driver/runtime versions."""
    report: Dict[str, Any] = {"version": __version__, "backends": {}}
    for name in backends.ALL_BACKENDS:
        reason = backends.reason_unavailable(name)
        report["backends"][name] = "usable" if reason is None else f"unavailable: {reason}"
    for kind in ("cpu", "gpu"):
        try:
            report[f"{kind}_backend"] = backends.get_backend(kind)
        except RuntimeError as exc:
            report[f"{kind}_backend"] = f"none ({exc})"
    report["cpu"] = _cpu_section()
    report["gpu"] = _gpu_section()
    return report


def format_info(report: Dict[str, Any]) -> str:
    lines = [f"deepkern {report['version']}"]
    lines.append(f"  CPU arrays -> {report['cpu_backend']}")
    lines.append(f"  GPU arrays -> {report['gpu_backend']}")
    lines.append("  backends:")
    for name, state in report["backends"].items():
        lines.append(f"    {name:6s} {state}")
    lines.append("  cpu:")
    for key, value in report["cpu"].items():
        lines.append(f"    {key}: {value}")
    lines.append("  gpu:")
    for key, value in report["gpu"].items():
        lines.append(f"    {key}: {value}")
    return "\n".join(lines)
