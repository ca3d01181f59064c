# impasto: the two commands of the README's quick start.
#   make example   install into .venv and paint the bundled example pair
#   make test      install into .venv and run the test suite (.ci/run runs exactly this)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch is pinned to the CPU wheel these machines keep on disk; an unpinned torch would pull
# a multi-GB CUDA build. On a machine with a GPU, install the torch build you want first.
TORCH  ?= torch==2.13.0

.PHONY: install example test bench

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/activate
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)" -e ".[test]"

example: install
	mkdir -p out
	$(BIN)/impasto transfer examples/tubingen.jpg examples/starry_night.jpg -o out/tubingen_starry.png

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/speed.py
