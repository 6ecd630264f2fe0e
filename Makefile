# elf-workflows: the two commands of the README (make demo, make test) and the install they share.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.install-stamp
TORCH  ?= torch==2.13.0
APT_PACKAGES := libxc-dev libopenblas-dev libfftw3-dev

.PHONY: install demo test bench system-deps clean-venv

install: $(STAMP)

# GPAW compiles against libxc, OpenBLAS and FFTW (Debian packages).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "error: GPAW needs$$missing; run: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	CC=g++ $(PIP) install -q -e ".[all]"
	@touch $(STAMP)

demo: install
	$(VENV)/bin/elf-workflows demo

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/bench_sad.py

clean-venv:
	rm -rf $(VENV)
