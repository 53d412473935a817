#!/usr/bin/env bash
# The C++ builds that `make test` does not see (`make native-check`, issue 18):
#   1. Clang with -Werror over CMake's -Wall -Wextra -Wpedantic, the extension
#      it builds then run through the kernel and normalization tests;
#   2. GCC with -Werror and DLINFER_PORTABLE_VECTORS: the conv/pool bodies as
#      compilers without GNU vector extensions (MSVC) build them, tested too;
#   3. a cross build for Linux aarch64 with -Werror: every x86 path compiled
#      out, which the objects' symbol table proves.
# Usage: .ci/native_check.sh PYTHON (a Python with pybind11, numpy, pytest and
# onnx: the test venv).  Installs clang and Debian's aarch64 cross g++ with
# apt-get where they are missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: $0 PYTHON}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")

missing=()
command -v clang++ >/dev/null || missing+=(clang)
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "native-check needs ${missing[*]} (apt-get install ${missing[*]}, as root)" >&2
    exit 1
  fi
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYBIND11_DIR=$("$PY" -m pybind11 --cmakedir)
PY_INCLUDE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)

configure_and_build() {  # BUILD_DIR, then cmake -D options
  local dir=$1
  shift
  cmake -S . -B "$dir" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" \
    -Dpybind11_DIR="$PYBIND11_DIR" "$@" >"$dir.log" 2>&1 || { cat "$dir.log"; return 1; }
  cmake --build "$dir" -j "$(nproc)" >>"$dir.log" 2>&1 || { cat "$dir.log"; return 1; }
}

# The kernel and normalization tests against the extension built in $1,
# swapped in through tests/asan_plugin.py (it loads DLINFER_NATIVE_PATH).
run_native_tests() {
  local so
  so=$(ls "$PWD/$1"/_native*.so)
  DLINFER_NATIVE_PATH=$so PYTHONPATH=python:tests "$PY" -m pytest -p asan_plugin -p no:cacheprovider \
    -q tests/test_kernels.py tests/test_native_normalize.py
}

echo ">> clang++ -Werror (with CMake's -Wall -Wextra -Wpedantic): $(clang++ --version | head -1)"
configure_and_build build/native-clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CXX_FLAGS=-Werror
run_native_tests build/native-clang

echo ">> g++ -Werror, DLINFER_PORTABLE_VECTORS (the conv/pool bodies as MSVC builds them)"
configure_and_build build/native-portable -DCMAKE_CXX_COMPILER=g++ \
  "-DCMAKE_CXX_FLAGS=-Werror -DDLINFER_PORTABLE_VECTORS"
run_native_tests build/native-portable

echo ">> aarch64-linux-gnu-g++ -Werror: $(aarch64-linux-gnu-g++ --version | head -1)"
# Cross-compiling, FindPython cannot ask the (x86-64) interpreter for its
# headers; they are the same C API on aarch64 (both LP64), so the host's do.
configure_and_build build/native-aarch64 -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_CXX_FLAGS=-Werror -DPython_INCLUDE_DIR="$PY_INCLUDE"
so=$(ls build/native-aarch64/_native*.so)
machine=$(LC_ALL=C readelf -h "$so" | sed -n 's/^ *Machine: *//p')
[ "$machine" = AArch64 ] || { echo "$so is for '$machine', not AArch64" >&2; exit 1; }
# Every function defined in the plain layer, local ones included: none may be
# an x86 body (AVX2, AVX-512, F16C) or use an x86 intrinsic.
symbols=$(aarch64-linux-gnu-nm -C --defined-only build/native-aarch64/libdlinfer_kernels.a |
  grep -E '^[0-9a-f]+ [A-Za-z] ')
x86=$(grep -i -E 'avx|vbmi|f16c|_mm_|_mm256|_mm512' <<<"$symbols" || true)
if [ -n "$x86" ]; then
  echo "x86 code in the aarch64 build:" >&2
  echo "$x86" >&2
  exit 1
fi
defined=$(grep -c -E '^[0-9a-f]+ [TtWw] ' <<<"$symbols")
# (pybind11 names the file with the host interpreter's ABI tag; the ELF header counts.)
echo "aarch64: $so is an AArch64 ELF; $defined functions in the kernels library, none x86"
echo ">> native-check passed"
