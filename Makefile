# The two README commands, `make demo` and `make test`, plus helpers.
# Each target creates .venv on first use; later runs reinstall dlinfer only when
# its sources change.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
SOURCES := pyproject.toml CMakeLists.txt $(shell find native python -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.py' -o -name '*.pyi' \) 2>/dev/null)

.PHONY: demo test test-all lint clean fashion-mnist

$(PY):
	$(PYTHON) -m venv $(VENV)

# `pip install .` builds dlinfer._native with scikit-build-core; the first run also
# downloads TensorFlow (about 2 minutes), later runs take seconds.
$(VENV)/.installed-train: $(PY) $(SOURCES)
	@echo ">> installing dlinfer with the [train] extra into $(VENV)"
	$(PIP) install -q ".[train]"
	@touch $@

$(VENV)/.installed-test: $(PY) $(SOURCES)
	@echo ">> installing dlinfer with the [train,test] extras into $(VENV)"
	$(PIP) install -q ".[train,test]"
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

# Everything, the slow tests included.
test-all: $(VENV)/.installed-test
	$(PY) -m pytest -m ""

lint: $(VENV)/.installed-test
	$(PIP) install -q ruff
	$(PY) -m ruff check python training tests

clean:
	rm -rf build artifacts $(VENV) .pytest_cache
