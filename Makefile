# impasto: the two commands of the README's quick start.
#   make example   install into .venv and paint the bundled example pair
#   make test      install into .venv and run the test suite, then the torchvision backbones'
#                  suite in .venv-models (.ci/run runs exactly this)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch is pinned to the CPU wheel these machines keep on disk; an unpinned torch would pull
# a multi-GB CUDA build. On a machine with a GPU, install the torch build you want first.
TORCH  ?= torch==2.13.0
# The torchvision backbones (resnet50, inception_v3, mobilenet_v2) are tested in a second venv:
# PyPI's torchvision does not import beside the 2.13.0 CPU wheel, so it gets the torch release
# that torchvision release was built for. IMPASTO_REQUIRE_TORCHVISION=1 makes a missing or
# broken torchvision fail those tests instead of skipping them.
MODELS_VENV  ?= .venv-models
MODELS_BIN    = $(MODELS_VENV)/bin
MODELS_TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install install-models chromium example test test-core test-models bench

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/activate
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)" -e ".[test]"

$(MODELS_BIN)/activate:
	$(PYTHON) -m venv $(MODELS_VENV)

install-models: $(MODELS_BIN)/activate
	$(MODELS_BIN)/pip install -q --disable-pip-version-check $(MODELS_TORCH) -e ".[test,models]"

example: install
	mkdir -p out
	$(BIN)/impasto transfer examples/tubingen.jpg examples/starry_night.jpg -o out/tubingen_starry.png

# The studio's browser test drives Debian's chromium through Playwright (Playwright's own browser
# download needs the internet); installed here when missing (as root, or with sudo), and
# IMPASTO_REQUIRE_BROWSER=1 makes a missing browser fail that test instead of skipping it.
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

test: test-core test-models

# two workers, one torch thread each (tests/conftest.py): the suite's tiny runs scale better
# across processes than across threads on a 2-core machine (4.4 min against 8.5 here).
# --dist loadgroup keeps the Ray tests (xdist_group "ray") on one worker: one Ray cluster at a
# time; Ray itself comes with the test extra. The studio's browser test needs Chromium
# (make chromium), and IMPASTO_REQUIRE_BROWSER=1 turns a missing one into a failure.
test-core: install chromium
	IMPASTO_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -n 2 --dist loadgroup

test-models: install-models
	IMPASTO_REQUIRE_TORCHVISION=1 $(MODELS_BIN)/python -m pytest -n 2 tests/test_models.py

bench: install
	$(BIN)/python benchmarks/speed.py
