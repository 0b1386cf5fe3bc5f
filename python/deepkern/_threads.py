"""Thread controls of the CPU kernels: ``dk.set_num_threads``, ``dk.get_num_threads``, and a
threadpoolctl controller so that ``threadpool_limits(1)`` (what scikit-learn and joblib use
against oversubscription) limits deepkern too.

The count starts from ``DEEPKERN_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs the
process may run on (read by the compiled module when it loads). The kernels run on deepkern's
own thread pool (``dk.info()['cpu']['parallel_runtime']``), in which the calling thread works
too and never waits for a worker that has not started, so a busy machine or more threads than
cores slows a kernel down gracefully instead of stalling it.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Optional

_registered = False


def _cpu_module() -> Optional[ModuleType]:
    try:
        from . import _cpu  # type: ignore[attr-defined]
    except ImportError:
        return None
    register_threadpoolctl()
    return _cpu


def get_num_threads() -> int:
    """Threads the CPU kernels use, the calling thread included (1 without the C++ module)."""
    cpu = _cpu_module()
    return int(cpu.num_threads()) if cpu is not None else 1


def set_num_threads(n: int) -> None:
    """Use ``n`` (>= 1) threads in the CPU kernels from the next call on, in every Python thread."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: expected a positive count, got {n}")
    cpu = _cpu_module()
    if cpu is not None:
        cpu.set_num_threads(n)


def parallel_runtime() -> str:
    """Name of the thread pool the CPU kernels run on ("none" without the C++ module)."""
    cpu = _cpu_module()
    return str(cpu.parallel_runtime()) if cpu is not None else "none"


def _controller_class() -> Any:
    from threadpoolctl import LibController

    class DeepkernController(LibController):  # type: ignore[misc]
        """threadpoolctl's view of deepkern's pool: the library is the _cpu extension module,
        recognised by its exported C functions. user_api "openmp": the pool stands in for the
        OpenMP runtime the kernels used to run on and honours OMP_NUM_THREADS the same way."""
        user_api = "openmp"
        internal_api = "deepkern"
        filename_prefixes = ("_cpu",)
        check_symbols = ("deepkern_get_num_threads", "deepkern_set_num_threads")

        def get_num_threads(self) -> int:
            return int(self.dynlib.deepkern_get_num_threads())

        def set_num_threads(self, num_threads: int) -> None:
            self.dynlib.deepkern_set_num_threads(int(num_threads))

        def get_version(self) -> Optional[str]:
            from ._version import __version__
            return __version__

    return DeepkernController


def register_threadpoolctl() -> bool:
    """Register deepkern's controller with threadpoolctl (once; False when it is not installed
    or too old to accept controllers)."""
    global _registered
    if _registered:
        return True
    try:
        import threadpoolctl
        register = threadpoolctl.register
    except (ImportError, AttributeError):
        return False
    register(_controller_class())
    _registered = True
    return True
