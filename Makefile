# The two commands: `make demo` and `make test`. Each creates/reuses .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)
DEMO_DIR ?= runs/demo

.PHONY: demo test venv clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,eval]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs --durations=15 tests

demo: $(STAMP)
	$(BIN)/python -m launch.demo --out $(DEMO_DIR)

clean:
	rm -rf runs
