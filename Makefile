# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck bench vectors fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# Ctrl-C reaches the relay itself (exec: no shell in between), which closes its sockets and
# exits 0 within 2 s; make then reports no error.
run: $(VENV)/.installed
	exec $(BIN)/backchannel-relay serve

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest
	$(BIN)/ruff check .
	$(BIN)/mypy --strict backchannel server/backchannel_relay client/backchannel_cli

bench: $(VENV)/.installed
	$(BIN)/python -m backchannel.bench
	$(BIN)/backchannel-relay bench
	$(BIN)/python -m backchannel_cli.bench

vectors: $(VENV)/.installed
	$(BIN)/python -m tests.vectors.generate

# `make test` fuzzes every decoder briefly (tests/fuzz); this runs each target FUZZ_SECONDS
# (or only FUZZ_TARGET), under atheris when it installs (coverage-guided), else hypothesis.
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.installed-test
	-$(BIN)/python -m pip install --quiet atheris
	$(BIN)/python -m tests.fuzz.run $(if $(FUZZ_TARGET),--target $(FUZZ_TARGET),--all) \
		--seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
