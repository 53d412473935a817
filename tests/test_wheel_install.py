"""The wheel `make wheel` builds installs and runs where no compiler can be reached (issue 18).

A fresh venv, with no access to this one's packages, gets the wheel and its dependencies
as binaries only, under a PATH that holds the venv's own bin/ and nothing else: no c++,
cc, gcc, clang, cmake, ninja or make.  There ``dlinfer info`` and ``Classifier.predict``
run on the digit classifier, and the answers are checked against its NumPy model.

Slow (a wheel build and a venv of about 1 GB): ``make test-wheel`` builds the wheel and
runs this file in CI.  The wheel is ``$DLINFER_WHEEL``, or else ``make wheel`` runs first.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from reference import assert_close

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# What a source build would call: compilers, linkers and build drivers.
BUILD_TOOLS = ("c++", "g++", "gcc", "cc", "clang", "clang++", "ld", "cmake", "ninja", "make")

PREDICT = """
import json, sys
import dlinfer
clf = dlinfer.Classifier(sys.argv[1])
preds = clf.predict(sys.argv[2:])
proba = clf.predict_proba(sys.argv[2:])
native = sys.modules.get("dlinfer._native")
print(json.dumps({"dlinfer": dlinfer.__file__, "native": native and native.__file__,
                  "index": [p.index for p in preds], "label": [p.label for p in preds],
                  "proba": proba.tolist()}))
"""


@pytest.fixture(scope="module")
def wheel() -> Path:
    path = os.environ.get("DLINFER_WHEEL")
    if not path:
        subprocess.run(["make", "wheel"], cwd=ROOT, check=True)
        (path,) = glob.glob(str(ROOT / "dist" / "dlinfer-*-manylinux*.whl"))
    return Path(path).resolve()


def bare_env(bin_dir: Path) -> dict[str, str]:
    """This process's environment with PATH = bin_dir alone and nothing that points
    Python at another tree (the tests run with PYTHONPATH=python)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "LD_LIBRARY_PATH")}
    env["PATH"] = str(bin_dir)
    return env


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel-venv") / "venv"
    # The interpreter this venv was made from; --without-system-site-packages is the default.
    subprocess.run([sys._base_executable, "-m", "venv", str(root)], check=True)
    env = bare_env(root / "bin")
    reachable = {tool: shutil.which(tool, path=env["PATH"]) for tool in BUILD_TOOLS}
    assert not any(reachable.values()), f"build tools on the test PATH: {reachable}"
    # --only-binary: pip may not build anything, dlinfer or a dependency, from source.
    in_venv(root, str(root / "bin" / "python"), "-m", "pip", "install", "-q",
            "--disable-pip-version-check", "--only-binary", ":all:", f"{wheel}[gpu]",
            timeout=600)
    return root


def in_venv(venv: Path, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(args, env=bare_env(venv / "bin"), cwd=venv.parent,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def runtime_requirements(wheel: Path) -> dict[str, str]:
    """The wheel's onnxruntime requirements, name -> "name<specifier>", markers left off."""
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
    found = {}
    for line in meta.decode().splitlines():
        if line.startswith("Requires-Dist: onnxruntime"):
            req = line.removeprefix("Requires-Dist: ").split(";")[0].strip()
            found[req.split("<")[0].split(">")[0].split("[")[0].strip()] = req
    return found


def test_wheel_is_manylinux_and_carries_the_extension(wheel):
    assert "-manylinux_" in wheel.name or "-manylinux2014_" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert [n for n in names if n.startswith("dlinfer/_native.") and n.endswith(".so")], names
    assert not [n for n in names if n.endswith((".cpp", ".hpp"))]  # binaries, not sources
    # one runtime per platform, by marker (docs/install.md; tests/test_wheel_markers.py)
    assert sorted(runtime_requirements(wheel)) == ["onnxruntime", "onnxruntime-gpu"]


def predict_in_venv(venv: Path, model: str, paths: list[str], want: np.ndarray) -> None:
    """Classifier.predict in the venv; dlinfer and its compiled module must come from
    the venv and the probabilities match ``want``, the NumPy model's."""
    site = str(venv / "lib")
    out = json.loads(in_venv(venv, str(venv / "bin" / "python"), "-c", PREDICT, model,
                             *paths).splitlines()[-1])
    assert out["dlinfer"].startswith(site), out["dlinfer"]
    assert out["native"] and out["native"].startswith(site), out["native"]
    assert_close(np.asarray(out["proba"], dtype=np.float32), want, atol=1e-5,
                 context="installed wheel vs the NumPy model")
    assert out["index"] == want.argmax(1).tolist()
    assert out["label"] == [str(i) for i in out["index"]]


def test_installed_wheel_runs_info_and_predict_without_a_compiler(
        venv, mnist_onnx, digit_pngs, digit_classifier, mnist_digits):
    in_venv(venv, str(venv / "bin" / "python"), "-m", "pip", "check")

    info = json.loads(in_venv(venv, str(venv / "bin" / "dlinfer"), "info", mnist_onnx, "--json"))
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["inputs"] == [{"name": "images", "shape": [None, 28, 28, 1], "dtype": "float32"}]
    assert info["spec"]["labels"] == [str(i) for i in range(10)]

    paths, labels = digit_pngs
    want = digit_classifier.probabilities(mnist_digits.x_test[:len(paths)]).astype(np.float32)
    predict_in_venv(venv, mnist_onnx, paths, want)
    # the digit classifier gets ~90% of held-out digits right; chance would be 1 in 10
    assert sum(i == y for i, y in zip(want.argmax(1), labels)) >= 7


def test_switching_to_the_cpu_runtime_as_documented(
        venv, wheel, mnist_onnx, digit_pngs, digit_classifier, mnist_digits):
    """docs/install.md, "Switching runtimes": the GPU build out, the CPU build in, and
    dlinfer predicts the same; pip check is content (dlinfer itself needs no build)."""
    python = str(venv / "bin" / "python")
    in_venv(venv, python, "-m", "pip", "uninstall", "-q", "-y", "onnxruntime-gpu")
    in_venv(venv, python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--only-binary", ":all:", runtime_requirements(wheel)["onnxruntime"])
    builds = in_venv(venv, python, "-c", "from importlib import metadata as m; "
                     "print(sorted(d.metadata['Name'] for d in m.distributions() "
                     "if d.metadata['Name'].startswith('onnxruntime')))")
    assert builds.strip() == "['onnxruntime']"
    paths, _ = digit_pngs
    want = digit_classifier.probabilities(mnist_digits.x_test[:len(paths)]).astype(np.float32)
    predict_in_venv(venv, mnist_onnx, paths, want)
    check = subprocess.run([python, "-m", "pip", "check"], env=bare_env(venv / "bin"),
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


# -- beside a package that depends on onnxruntime (issue 27, docs/install.md) ---------------

def dependent_wheel(folder: Path) -> Path:
    """A wheel of a package that depends on ``onnxruntime``, as the OCR, VAD and
    detection packages do: to pip, the dependency is all that matters, and this one is
    written here rather than downloaded with its own dependencies."""
    name, version = "needs_onnxruntime", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "import onnxruntime\nBUILD = onnxruntime.__version__\n",
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                             "Requires-Dist: onnxruntime>=1.16\n"),
        f"{dist}/WHEEL": ("Wheel-Version: 1.0\nGenerator: dlinfer-tests\n"
                          "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    files[f"{dist}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{dist}/RECORD"])
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
    return path


def doctor_install(venv: Path) -> dict:
    facts = json.loads(in_venv(venv, str(venv / "bin" / "dlinfer"), "doctor", "--json"))
    return facts["onnxruntime"]["install"]


def test_beside_a_package_that_depends_on_onnxruntime(
        wheel, tmp_path, mnist_onnx, digit_pngs, digit_classifier, mnist_digits):
    """`pip install 'dlinfer[cpu]' other-package` leaves one onnxruntime, shared, and both
    run; the GPU build added over it is what `dlinfer doctor` then names."""
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    in_venv(venv, python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--only-binary", ":all:", f"{wheel}[cpu]", str(dependent_wheel(tmp_path)),
            timeout=600)
    in_venv(venv, python, "-m", "pip", "check")
    assert in_venv(venv, python, "-c", "import needs_onnxruntime as n; print(n.BUILD)").strip()
    install = doctor_install(venv)
    assert list(install["distributions"]) == ["onnxruntime"] and not install["clobbered"]
    paths, _ = digit_pngs
    want = digit_classifier.probabilities(mnist_digits.x_test[:len(paths)]).astype(np.float32)
    predict_in_venv(venv, mnist_onnx, paths, want)

    # What dlinfer depending on onnxruntime-gpu used to do to the same venv (the GPU build
    # alone: the cuda extra's line would bring the CUDA wheels too).
    gpu_build = runtime_requirements(wheel)["onnxruntime"].replace("onnxruntime",
                                                                   "onnxruntime-gpu", 1)
    in_venv(venv, python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--only-binary", ":all:", gpu_build, timeout=600)
    install = doctor_install(venv)
    assert install["clobbered"] and sorted(install["distributions"]) == [
        "onnxruntime", "onnxruntime-gpu"]
    assert "installed over each other" in install["problem"] and "pip uninstall" in install["fix"]
    text = in_venv(venv, str(venv / "bin" / "dlinfer"), "doctor")
    assert "PROBLEM:" in text and "onnxruntime-gpu" in text


def test_two_source_builds_at_once_from_one_checkout(tmp_path):
    """`pip install .` twice at once from one checkout (issue 28): each build has its own
    temporary build folder (pyproject.toml sets no build-dir), so neither trips over the
    other's CMake cache, and neither writes into the source tree."""
    before = {p for p in ROOT.iterdir()}
    builds = [subprocess.Popen([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                                "-w", str(tmp_path / f"wheel{i}"), str(ROOT)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for i in range(2)]
    for build in builds:
        out, _ = build.communicate(timeout=900)
        assert build.returncode == 0, out[-3000:]
    for i in range(2):
        (wheel_file,) = (tmp_path / f"wheel{i}").glob("dlinfer-*.whl")
        with zipfile.ZipFile(wheel_file) as zf:
            assert any(n.startswith("dlinfer/_native") for n in zf.namelist())
    assert {p for p in ROOT.iterdir()} - before == set()
