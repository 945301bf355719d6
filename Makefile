# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test browser strace screenshots lint typecheck bench vectors fuzz clean

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

# The control page's tests drive Debian's Chromium through its own chromedriver, never a
# downloaded browser. Missing, they are installed (as root, as CI runs); if that cannot be done
# the run stops here: the browser tests never skip.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing Debian's chromium and chromium-driver for the browser tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver; } || { \
		echo "error: cannot install chromium and chromium-driver (apt-get, as root);" \
			"the browser tests need /usr/bin/chromium and /usr/bin/chromedriver" >&2; exit 1; }; \
	fi

# The relay's sync-before-receipt test (tests/relay/test_sync_before_receipt.py) traces the
# relay's system calls with Debian's strace; installed like chromium above, never skipped.
strace:
	@if [ ! -x /usr/bin/strace ]; then \
		echo "installing Debian's strace for the sync-before-receipt test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends strace; } || { \
		echo "error: cannot install strace (apt-get, as root);" \
			"the sync-before-receipt test needs /usr/bin/strace" >&2; exit 1; }; \
	fi

test: $(VENV)/.installed-test browser strace
	$(BIN)/python -m pytest
	$(BIN)/ruff check .
	$(BIN)/mypy --strict backchannel server/backchannel_relay client/backchannel_cli

# The README's screenshots (docs/*.png, docs/tui-*.svg), taken again by the browser and TUI tests.
screenshots: $(VENV)/.installed-test browser
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser tests/tui

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
