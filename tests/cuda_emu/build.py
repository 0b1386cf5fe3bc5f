"""Builds the CUDA emulation harness: csrc/cuda/*.cu compiled as C++ for the CPU.

Each .cu is copied with its launches rewritten (``k<<<g, b, s, st>>>(args)`` becomes
``::cuda_emu::launch(g, b, s, st).with(k)(args)``, line numbers kept) and compiled by g++ against
tests/cuda_emu/include (a cuda_runtime.h and mma.h that emulate the built-ins). Two products:

* ``lib``: a shared library with C entry points (driver.cpp) for ctypes (emu.py); built with
  UBSan's alignment check, so a misaligned float4 access aborts;
* ``tsan``: tsan_main.cpp, an executable running a subset under ThreadSanitizer.

Builds are cached under build/cuda_emu/<hash of every input>, object files one by one (a variant
with one barrier deleted recompiles one file). ``drop_sync=("matmul.cu", 1)``
deletes the first ``__syncthreads();`` of that file (the race demonstration), ``csrc`` builds
another checkout's kernels (e.g. an old commit's, to show a test failing there).

    python tests/cuda_emu/build.py [lib|tsan] [--csrc DIR] [--drop-sync FILE:N]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"
CACHE = ROOT / "build" / "cuda_emu"

_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+)\s+(\w+)\s*\[\s*\]\s*;")
_LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
_FLAGS = ["-std=c++20", "-g", "-pthread", "-ffp-contract=off", "-fno-fast-math", "-Wno-unused-parameter"]
_KIND_FLAGS = {
    "lib": ["-O2", "-fPIC", "-fsanitize=alignment", "-fno-sanitize-recover=alignment"],
    "tsan": ["-O1", "-fsanitize=thread"],
}


def rewrite_launches(text: str) -> str:
    """``k<<<cfg>>>(`` -> ``::cuda_emu::launch(cfg).with(k)(``; newlines inside cfg are kept.
    Also ``extern __shared__ T s[];`` -> ``T* s = ::cuda_emu::dynamic_shared<T>();``."""
    text = _DYNAMIC_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = ::cuda_emu::dynamic_shared<{m.group(1)}>();", text)
    return _LAUNCH.sub(lambda m: f"::cuda_emu::launch({m.group(2)}).with({m.group(1)})(", text)


def drop_barrier(text: str, n: int) -> str:
    """Removes the n-th (1-based) ``__syncthreads();``."""
    spans = [m.span() for m in re.finditer(r"__syncthreads\(\);", text)]
    if not 1 <= n <= len(spans):
        raise ValueError(f"no __syncthreads() number {n} (the file has {len(spans)})")
    a, b = spans[n - 1]
    return text[:a] + "/* barrier dropped */" + text[b:]


def _sources(csrc: Path):
    return sorted((csrc / "cuda").glob("*.cu")), sorted((csrc / "cuda").glob("*.cuh"))


def _key(kind: str, csrc: Path, drop_sync) -> str:
    h = hashlib.sha256(repr((kind, str(drop_sync), _FLAGS, _KIND_FLAGS[kind])).encode())
    cus, cuhs = _sources(csrc)
    files = cus + cuhs + sorted((csrc / "common").glob("*.hpp")) + sorted(HERE.rglob("*.h")) + \
        sorted(HERE.glob("*.cpp"))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}\n{proc.stdout}{proc.stderr}")


def build(kind: str = "lib", csrc: Optional[Path] = None, drop_sync: Optional[Tuple[str, int]] = None,
          jobs: int = 2) -> Path:
    """Path of the built library (kind "lib") or executable (kind "tsan"); cached."""
    csrc = Path(csrc or os.environ.get("DEEPKERN_EMU_CSRC") or CSRC).resolve()
    out_dir = CACHE / f"{kind}-{_key(kind, csrc, drop_sync)}"
    product = out_dir / ("libdkemu.so" if kind == "lib" else "tsan_main")
    if product.exists():
        return product
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "src" / "cuda").mkdir(parents=True)
    cus, cuhs = _sources(csrc)
    for h in cuhs:
        shutil.copy(h, tmp / "src" / "cuda" / h.name)
    gen = []
    for cu in cus:
        text = rewrite_launches(cu.read_text())
        if drop_sync and cu.name == drop_sync[0]:
            text = drop_barrier(text, drop_sync[1])
        dst = tmp / "src" / "cuda" / cu.name
        dst.write_text(f'#line 1 "{cu}"\n' + text)
        gen.append(dst)
    includes = ["-I", str(HERE / "include"), "-I", str(tmp / "src"), "-I", str(csrc)]
    flags = _FLAGS + _KIND_FLAGS[kind]
    units = [(g, ["-x", "c++"]) for g in gen] + [(HERE / n, []) for n in ("runtime.cpp", "driver.cpp", "probes.cpp")]
    if kind == "tsan":
        units.append((HERE / "tsan_main.cpp", []))
    headers = hashlib.sha256()
    for h in sorted((tmp / "src" / "cuda").glob("*.cuh")) + sorted((csrc / "common").glob("*.hpp")) + \
            sorted((HERE / "include").glob("*.h")):
        headers.update(h.read_bytes())
    obj_cache = CACHE / "obj"
    obj_cache.mkdir(parents=True, exist_ok=True)

    def compile_one(unit):
        src, lang = unit
        key = hashlib.sha256(repr((flags, lang, src.name)).encode() + headers.digest() + src.read_bytes())
        obj = obj_cache / f"{src.stem}-{key.hexdigest()[:20]}.o"
        if not obj.exists():
            part = obj.with_suffix(f".tmp{os.getpid()}")
            _run(["g++", *flags, *includes, "-c", *lang, str(src), "-o", str(part)])
            part.rename(obj)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        objs = list(pool.map(compile_one, units))
    link = ["g++", *flags, *map(str, objs), "-o", str(tmp / product.name)]
    if kind == "lib":
        link.insert(1, "-shared")
    _run(link)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return product


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", nargs="?", default="lib", choices=sorted(_KIND_FLAGS))
    p.add_argument("--csrc", help="the csrc directory to build (default: this checkout's)")
    p.add_argument("--drop-sync", help="FILE:N deletes the N-th __syncthreads() of csrc/cuda/FILE")
    a = p.parse_args(argv)
    drop = None
    if a.drop_sync:
        name, n = a.drop_sync.rsplit(":", 1)
        drop = (name, int(n))
    print(build(a.kind, Path(a.csrc) if a.csrc else None, drop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
