# The README's two commands: `make demo` and `make test`. Each creates/updates .venv, installs
# the pinned dev toolchain and the package (editable, C++ extension built by scikit-build-core),
# then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The editable install maps each module file at install time (scikit-build-core's import hook), so
# the stamp is named after the set of package files: adding, moving or removing a module reinstalls.
MODULES := $(shell find fastinterp kernels -name '*.py' 2>/dev/null | sort | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.fastinterp-installed-$(MODULES)
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test test-fast bench install clean

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard csrc/*.cpp csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "torch==2.14.1" "torchvision==0.29.1" "scikit-build-core>=0.11" "pybind11>=2.13"
	command -v cmake >/dev/null || $(PIP) install --quiet "cmake>=3.18"
	$(PIP) install --quiet --no-build-isolation -e ".[dev]"
	# scikit-build-core's editable install resolves every fastinterp module through its own import
	# hook, and also appends the checkout root (and its parent) to sys.path: drop those lines, so
	# that nothing of the checkout but fastinterp (not kernels/, tests/, benchmarks/) is importable.
	sed -i '\|^/|d' $(VENV)/lib/python*/site-packages/_editable_skbc_fastinterp.pth
	$(PY) -c "import fastinterp._C, fastinterp; print('fastinterp', fastinterp.__version__, 'installed')"
	rm -f $(VENV)/.fastinterp-installed*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m fastinterp demo

# Triton kernels run on the CPU through the interpreter in CI (no GPU).
# PYTHONSAFEPATH: the checkout root is not put on sys.path, so tests import the installed package.
test: $(STAMP)
	TRITON_INTERPRET=1 PYTHONSAFEPATH=1 $(PY) -m pytest -q

# The fast subset (under 2 minutes here): every test but those that build, export, spawn processes
# or train (the `slow` marker). `make test` (and CI) runs everything.
test-fast: $(STAMP)
	TRITON_INTERPRET=1 PYTHONSAFEPATH=1 $(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_representation.py

clean:
	rm -rf build out .pytest_cache .hypothesis
