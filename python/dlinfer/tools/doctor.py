"""``dlinfer doctor``: what this machine can really run, and why not.

Every fact is measured rather than assumed: a provider counts as usable only after a
session on it ran a real convolution, gave the exact answer, still listed the provider
first in ``session.get_providers()`` and ran the convolution there rather than on CPU
(:mod:`dlinfer.tools.probe`).  onnxruntime-gpu lists ``CUDAExecutionProvider`` as
*available* even where CUDA cannot load.  What ``onnxruntime.preload_dlls()`` prints
(it warns about other CUDA versions, torch's say) is captured into the report rather
than written to stdout, where it would corrupt ``--json``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import onnxruntime as ort

from ..runtime import providers as _providers
from ..runtime.assignment import describe as describe_assignment
from ..runtime.backends.choice import cpu_flags
from ..runtime.installed import onnxruntime_install
from .probe import probe_model_bytes, probe_provider

__all__ = ["diagnose", "format_report", "probe_model_bytes", "probe_provider"]

# -- CUDA libraries --------------------------------------------------------------------------


def _elf_needed(path: str) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF file (what ``readelf -d`` lists)."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    needed = []
    for sh in sections:
        if sh[1] != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[sh[6]]  # sh_link -> its string table
        for off in range(sh[4], sh[4] + sh[5], 16):
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                start = strtab[4] + val
                needed.append(data[start : data.index(b"\0", start)].decode())
    return needed


def _loaded_path(soname: str) -> str | None:
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                if os.path.basename(path) == soname:
                    return path
    except OSError:
        pass
    return None


def _version_call(lib: ctypes.CDLL, name: str) -> int | None:
    """Call ``int name(int*)`` (cudaRuntimeGetVersion, cuDriverGetVersion) safely."""
    fn = getattr(lib, name, None)
    if fn is None:
        return None
    value = ctypes.c_int(0)
    fn.argtypes = [ctypes.POINTER(ctypes.c_int)]
    fn.restype = ctypes.c_int
    return value.value if fn(ctypes.byref(value)) == 0 else None


def _cuda_version_str(v: int | None) -> str | None:
    return None if not v else f"{v // 1000}.{v % 1000 // 10}"


def required_versions() -> dict[str, Any]:
    """What this onnxruntime build needs: CUDA and cuDNN versions, and its pip extras."""
    out: dict[str, Any] = {"cuda": None, "cudnn": None, "wheels": {}}
    try:
        from onnxruntime.capi import build_and_package_info as info

        out["cuda"] = getattr(info, "cuda_version", None)
        out["cudnn"] = getattr(info, "cudnn_version", None)
    except ImportError:
        pass
    try:
        from importlib import metadata

        for req in metadata.requires("onnxruntime-gpu") or []:
            m = re.match(r"(nvidia-[\w-]+)\s*([~=<>!].*?)\s*;\s*extra\s*==", req)
            if m:
                out["wheels"][m.group(1)] = m.group(2)
    except Exception:  # noqa: BLE001 - a CPU-only onnxruntime has no such distribution
        pass
    if out["cudnn"] is None:
        spec = out["wheels"].get("nvidia-cudnn-cu13") or next(
            (v for k, v in out["wheels"].items() if k.startswith("nvidia-cudnn")), None
        )
        if spec:
            out["cudnn"] = re.sub(r"[^\d.]", "", spec).split(".")[0]
    return out


def cuda_libraries() -> dict[str, Any]:
    """The libraries onnxruntime's CUDA provider needs, whether each loads, and versions."""
    _providers.preload_cuda_libraries()
    required = required_versions()
    provider_lib = _providers._provider_library("cuda")
    needed = [n for n in _elf_needed(provider_lib) if re.match(r"lib(cu|nv)", n)]
    # cuDNN and cuFFT are opened lazily (dlopen), so they are not in DT_NEEDED.
    if required["cudnn"]:
        needed.append(f"libcudnn.so.{required['cudnn']}")
    wheel_cufft = required["wheels"].get("nvidia-cufft")
    if wheel_cufft:
        needed.append(f"libcufft.so.{re.sub(r'[^0-9.]', '', wheel_cufft).split('.')[0]}")
    libraries = []
    versions: dict[str, str | None] = {"cuda_runtime": None, "cuda_driver": None, "cudnn": None}
    for soname in dict.fromkeys(needed):
        entry: dict[str, Any] = {"name": soname, "found": False, "path": None, "error": None}
        try:
            lib = ctypes.CDLL(soname, mode=ctypes.RTLD_LOCAL)
        except OSError as exc:
            entry["error"] = str(exc)
        else:
            entry["found"] = True
            entry["path"] = _loaded_path(soname)
            if soname.startswith("libcudart"):
                v = _version_call(lib, "cudaRuntimeGetVersion")
                versions["cuda_runtime"] = _cuda_version_str(v)
            elif soname.startswith("libcuda.so"):
                v = _version_call(lib, "cuDriverGetVersion")
                versions["cuda_driver"] = _cuda_version_str(v)
            elif soname.startswith("libcudnn.so"):
                fn = getattr(lib, "cudnnGetVersion", None)
                if fn is not None:
                    fn.restype = ctypes.c_size_t
                    v = int(fn())
                    versions["cudnn"] = f"{v // 10000}.{v % 10000 // 100}.{v % 100}"
        libraries.append(entry)
    try:
        import importlib.util

        wheels = importlib.util.find_spec("nvidia") is not None
    except (ImportError, ValueError):
        wheels = False
    return {
        "required": required,
        "provider_library": provider_lib if os.path.exists(provider_lib) else None,
        "libraries": libraries,
        "missing": [e["name"] for e in libraries if not e["found"]],
        "preload_output": _providers.PRELOAD_OUTPUT or None,
        "versions": versions,
        "nvidia_wheels_installed": wheels,
    }


# -- GPU -----------------------------------------------------------------------------------


def _gpus_from_nvidia_smi() -> list[dict[str, Any]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        text = subprocess.run(
            [exe, "--query-gpu=index,name,driver_version,memory.total,compute_cap",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=15, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            gpus.append({
                "index": int(parts[0]) if parts[0].isdigit() else parts[0],
                "name": parts[1],
                "driver": parts[2],
                "memory_mib": int(float(parts[3])) if parts[3].replace(".", "").isdigit() else None,
                "compute_capability": parts[4] if len(parts) > 4 else None,
            })
    return gpus


def _gpus_from_nvml() -> list[dict[str, Any]] | None:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        buf = ctypes.create_string_buffer(96)
        driver = buf.value.decode() if nvml.nvmlSystemGetDriverVersion(buf, 96) == 0 else None
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return []
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            nvml.nvmlDeviceGetName(handle, name, 96)
            mem = (ctypes.c_ulonglong * 3)()  # total, free, used
            total = mem[0] // 2**20 if nvml.nvmlDeviceGetMemoryInfo(handle, mem) == 0 else None
            gpus.append({"index": i, "name": name.value.decode(), "driver": driver,
                         "memory_mib": total, "compute_capability": None})
        return gpus
    finally:
        nvml.nvmlShutdown()


def gpu_info() -> dict[str, Any]:
    """NVIDIA GPUs and driver, from nvidia-smi or else the driver's libnvidia-ml."""
    gpus = _gpus_from_nvidia_smi()
    if gpus is not None:
        return {"source": "nvidia-smi", "devices": gpus}
    gpus = _gpus_from_nvml()
    if gpus is not None:
        return {"source": "libnvidia-ml.so.1", "devices": gpus}
    return {"source": None, "devices": [],
            "reason": "no nvidia-smi on PATH and no loadable libnvidia-ml.so.1 (no NVIDIA driver)"}


# -- CPU -----------------------------------------------------------------------------------

_SIMD = re.compile(
    r"^(sse\d?(_\d)?|ssse3|avx\w*|fma4?|f16c|amx\w*|neon|asimd\w*|sve\d?|vsx|altivec)$"
)


def cpu_info() -> dict[str, Any]:
    """CPU model, core counts and SIMD extensions (from /proc/cpuinfo where it exists)."""
    model = platform.processor() or platform.machine()
    physical: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as f:
            block: dict[str, str] = {}
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key in ("model name", "Model", "cpu model") and value:
                    model = value
                elif key in ("physical id", "core id"):
                    block[key] = value
                elif not key and block:
                    physical.add((block.get("physical id", ""), block.get("core id", "")))
                    block = {}
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    flags = sorted(cpu_flags())
    return {
        "model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "usable_cores": usable,
        "simd": sorted(f for f in flags if _SIMD.match(f)),
    }


def backends_info() -> dict[str, Any]:
    """The runtime backends installed, OpenVINO's version and what its CPU plugin can run
    fast (BF16, INT8: the matrix engines), and ``backend="auto"``'s cached choices."""
    from ..runtime.backends import available_backends
    from ..runtime.backends.choice import cached_choices

    installed = available_backends()
    openvino = None
    if "openvino" in installed:
        try:
            import openvino as ov

            caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            openvino = {"version": ov.get_version(), "cpu_capabilities": list(caps)}
        except Exception as exc:  # noqa: BLE001 - a broken install is itself the finding
            openvino = {"version": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"installed": installed, "openvino": openvino, "auto_choices": cached_choices()}


# -- the report ----------------------------------------------------------------------------


def diagnose(probe: bool = True) -> dict[str, Any]:
    """Everything ``dlinfer doctor`` reports, as a JSON-ready dict.

    ``probe=False`` skips the per-provider sessions (the only slow part on a GPU
    machine, where TensorRT may take seconds to build its probe engine).
    """
    from .. import __version__

    try:
        build = ort.get_build_info() if hasattr(ort, "get_build_info") else None
    except Exception:  # noqa: BLE001
        build = None
    required = required_versions()
    available = list(ort.get_available_providers())
    probes = {p: probe_provider(p) for p in available} if probe else {}
    return {
        "dlinfer": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "onnxruntime": {
            "version": ort.__version__,
            "package": _ort_package(),
            "build": build,
            "cuda_version": required["cuda"],
            "device_reported": ort.get_device(),  # often "GPU" on any machine; see probes
            "install": onnxruntime_install(),  # two builds over each other, named
        },
        "backends": backends_info(),
        "providers": {
            "available": available,
            "usable": [p for p, r in probes.items() if r["usable"]],
            "probes": probes,
        },
        "cuda": cuda_libraries(),
        "gpu": gpu_info(),
        "cpu": cpu_info(),
    }


def _ort_package() -> str | None:
    try:
        from onnxruntime.capi import build_and_package_info as info

        return getattr(info, "package_name", None)
    except ImportError:
        return "onnxruntime"


def format_report(facts: dict[str, Any]) -> str:
    """The human-readable ``dlinfer doctor`` text for ``diagnose()``'s facts."""
    lines = []
    o = facts["onnxruntime"]
    lines.append(f"dlinfer {facts['dlinfer']}, Python {facts['python']}, numpy {facts['numpy']}")
    lines.append(f"platform:     {facts['platform']}")
    lines.append(
        f"onnxruntime:  {o['version']} ({o['package']}), built for CUDA {o['cuda_version']}"
    )
    install = o["install"]
    if install["problem"]:
        lines.append(f"PROBLEM:      {install['problem']}")
        lines.append(f"  fix:        {install['fix']}")
    if o["build"]:
        lines.append(f"build:        {o['build']}")
    lines.append(f"get_device(): {o['device_reported']}  (not evidence of a usable GPU)")
    lines.append("")
    lines.append("providers (available -> usable, each tested with a 3x3 convolution):")
    for name in facts["providers"]["available"]:
        r = facts["providers"]["probes"].get(name)
        if r is None:
            lines.append(f"  {name:<28} not probed")
        elif r["usable"]:
            lines.append(f"  {name:<28} usable")
        else:
            lines.append(f"  {name:<28} NOT usable: {r['reason']}")
        if r is not None and r.get("assignment"):
            lines += [f"  {'':<28} {line}" for line in describe_assignment(r["assignment"])]
    c = facts["cuda"]
    req = c["required"]
    lines.append("")
    lines.append(
        f"CUDA libraries (onnxruntime needs CUDA {req['cuda']}.x, cuDNN {req['cudnn']}.x):"
    )
    for lib in c["libraries"]:
        where = lib["path"] or ("loads" if lib["found"] else lib["error"])
        lines.append(f"  {lib['name']:<22} {'found' if lib['found'] else 'MISSING'}  {where}")
    v = c["versions"]
    found = ", ".join(f"{k} {val}" for k, val in v.items() if val) or "none found"
    lines.append(f"  versions found: {found}")
    if c.get("preload_output"):
        lines.append(f"  onnxruntime.preload_dlls() said: {c['preload_output'].strip()}")
    if req["wheels"]:
        wheels = ", ".join(f"{k}{s}" for k, s in req["wheels"].items())
        state = "installed" if c["nvidia_wheels_installed"] else "not installed"
        lines.append(f"  pip wheels ({state}; "
                     f"pip install 'dlinfer[cuda]'): {wheels}")
    g = facts["gpu"]
    lines.append("")
    if g["devices"]:
        for d in g["devices"]:
            lines.append(f"GPU {d['index']}: {d['name']}, driver {d['driver']}, "
                         f"{d['memory_mib']} MiB (from {g['source']})")
    else:
        why = g.get("reason") or f"no devices reported by {g['source']}"
        lines.append(f"GPU: none ({why})")
    lines += _backend_lines(facts["backends"])
    cpu = facts["cpu"]
    lines.append(f"CPU: {cpu['model']} ({cpu['arch']}), {cpu['logical_cores']} logical / "
                 f"{cpu['physical_cores'] or '?'} physical cores, {cpu['usable_cores']} usable")
    lines.append(f"SIMD: {' '.join(cpu['simd']) or 'unknown'}")
    return "\n".join(lines)


def _backend_lines(b: dict[str, Any]) -> list[str]:
    lines = ["", f"backends installed: {', '.join(b['installed'])}"]
    ov = b["openvino"]
    if ov is None:
        lines.append("  openvino: not installed (pip install 'dlinfer[openvino]'; docs/runtime.md)")
    elif ov.get("error"):
        lines.append(f"  openvino: BROKEN: {ov['error']}")
    else:
        lines.append(f"  openvino {ov['version']}, CPU plugin runs: "
                     f"{', '.join(ov['cpu_capabilities'])}")
    for path, choice in b["auto_choices"].items():
        lines.append(f"  backend='auto' for {path}: {choice['backend']} ({choice['reason']})")
    return lines
