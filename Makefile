# The two commands: `make demo` and `make test`. Each creates/reuses .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)
DEMO_DIR ?= runs/demo
# This machine keeps a CPU wheel of torch 2.13.0 on disk; elsewhere:
#   make TORCH_CPU="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test venv clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# resemblyzer (eval-tts) needs torch: the CPU build first, or pip resolves a CUDA build.
	$(BIN)/python -m pip install -q $(TORCH_CPU)
	$(BIN)/python -m pip install -q -e '.[dev,eval,eval-tts]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs --durations=20 -n 2 --dist loadfile --max-worker-restart=0 tests

demo: $(STAMP)
	$(BIN)/python -m launch.demo --out $(DEMO_DIR)

clean:
	rm -rf runs
