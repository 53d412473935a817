"""Which onnxruntime pip installs with dlinfer, per platform (issue 18, docs/install.md).

pyproject.toml picks the runtime with environment markers, and PEP 508 markers have no
"not", so the CPU build's marker is the GPU build's negated by hand.  Here both are
evaluated for every platform onnxruntime publishes wheels for, and more: exactly one
runtime must apply everywhere, and the GPU one only where onnxruntime-gpu exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from optional import requires

ROOT = Path(__file__).resolve().parent.parent

# (sys_platform, platform_machine) as Python reports them, and the runtime wanted there:
# onnxruntime-gpu has wheels for Linux x86-64 and Windows x64 only.
PLATFORMS = [
    ("linux", "x86_64", "onnxruntime-gpu"),
    ("win32", "AMD64", "onnxruntime-gpu"),
    ("linux", "aarch64", "onnxruntime"),
    ("linux", "ppc64le", "onnxruntime"),
    ("darwin", "arm64", "onnxruntime"),
    ("darwin", "x86_64", "onnxruntime"),
    ("win32", "ARM64", "onnxruntime"),
    ("freebsd14", "amd64", "onnxruntime"),
]


def requirements(*groups: str):
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = []
    for group in groups:
        lines = project["dependencies"] if group == "" else project["optional-dependencies"][group]
        found += [Requirement(line) for line in lines]
    return found


def applying(reqs, sys_platform: str, machine: str) -> list[str]:
    env = {"sys_platform": sys_platform, "platform_machine": machine}
    return sorted(r.name for r in reqs if r.marker is None or r.marker.evaluate(env))


@requires("tomllib", "packaging")
@pytest.mark.parametrize("sys_platform, machine, runtime", PLATFORMS,
                         ids=[f"{p}-{m}" for p, m, _ in PLATFORMS])
def test_exactly_one_onnxruntime_per_platform(sys_platform, machine, runtime):
    """The gpu extra: the GPU build where it exists, the CPU build elsewhere."""
    runtimes = [r for r in requirements("gpu") if r.name.startswith("onnxruntime")]
    assert len(runtimes) == 2  # the GPU and the CPU build, both pinned alike
    assert runtimes[0].specifier == runtimes[1].specifier
    assert applying(runtimes, sys_platform, machine) == [runtime]


@requires("tomllib", "packaging")
@pytest.mark.parametrize("sys_platform, machine, runtime", PLATFORMS,
                         ids=[f"{p}-{m}" for p, m, _ in PLATFORMS])
def test_no_build_by_default_and_the_cpu_build_everywhere(sys_platform, machine, runtime):
    """dlinfer itself depends on no onnxruntime build (two builds overwrite each other's
    files, docs/install.md); the cpu extra is the CPU build on every platform, pinned as
    the gpu extra's."""
    assert applying([r for r in requirements("") if r.name.startswith("onnxruntime")],
                    sys_platform, machine) == []
    (cpu,) = requirements("cpu")
    assert cpu.name == "onnxruntime" and cpu.marker is None
    assert cpu.specifier == requirements("gpu")[0].specifier


@requires("tomllib", "packaging")
@pytest.mark.parametrize("sys_platform, machine, runtime", PLATFORMS,
                         ids=[f"{p}-{m}" for p, m, _ in PLATFORMS])
def test_cuda_extra_only_where_the_gpu_build_exists(sys_platform, machine, runtime):
    extra = [r for r in requirements("cuda") if r.name == "onnxruntime-gpu"]
    assert len(extra) == 1 and extra[0].extras == {"cuda", "cudnn"}
    want = ["onnxruntime-gpu"] if runtime == "onnxruntime-gpu" else []
    assert applying(extra, sys_platform, machine) == want
