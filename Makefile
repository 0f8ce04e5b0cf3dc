# The two commands: `make demo` and `make test`. Each creates/reuses .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)
# make demo FAMILY=facodec: FACodec reconstruction, voice conversion and probes.
# make demo FAMILY=ns3: FACodec -> NaturalSpeech 3 masked diffusion -> zero-shot TTS.
# make demo FAMILY=clone: CLONE flow prosody, end to end -> zero-shot TTS.
FAMILY ?= gmm_lm
DEMO_DIR ?= runs/demo$(if $(filter-out gmm_lm,$(FAMILY)),_$(FAMILY))
QUALITY_DIR ?= runs/quality
# This machine keeps a CPU wheel of torch 2.13.0 on disk; elsewhere:
#   make TORCH_CPU="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_CPU ?= torch==2.13.0

.PHONY: demo quality test venv clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# resemblyzer (eval-tts) needs torch: the CPU build first, or pip resolves a CUDA build.
	$(BIN)/python -m pip install -q $(TORCH_CPU)
	$(BIN)/python -m pip install -q -e '.[dev,eval,eval-tts]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs --durations=40 -n 2 --dist loadfile --max-worker-restart=0 tests

demo: $(STAMP)
	$(BIN)/python -m launch.demo --family $(FAMILY) --out $(DEMO_DIR)

# The CPU quality recipe (about 2 h on 2 cores; rerun to resume): launch/quality.py.
quality: $(STAMP)
	$(BIN)/python -m launch.quality --out $(QUALITY_DIR)

clean:
	rm -rf runs
