"""``dk.info()``: what is built, what is usable, on which hardware."""
from __future__ import annotations

import os
import platform
from typing import Any, Dict

from . import backends


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
    except ImportError:
        pass
    return section


def _gpu_section() -> Dict[str, Any]:
    section: Dict[str, Any] = {}
    try:
        from . import _cuda  # type: ignore[attr-defined]
        section["cuda_module"] = "built"
        section.update(_cuda.device_query())
    except ImportError as exc:
        section["cuda_module"] = f"not built ({exc})"
    return section


def info() -> Dict[str, Any]:
    """A dict describing the build: each backend ('built and usable' or why not), the
    backend chosen for CPU and GPU arrays, CPU features and the GPUs with driver/runtime versions."""
    from . import __version__
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
