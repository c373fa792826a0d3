# Set-up contract: `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel on this machine; GPU users: make TORCH_SPEC="torch==2.x.y" (or install torch yourself first).
TORCH_SPEC ?= torch==2.13.0
export UNLEARN_AUDIT_CACHE ?= $(CURDIR)/.cache/unlearn-audit
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Without it, OpenMP threads spin-wait and training slows down many times when other processes share the cores.
export OMP_WAIT_POLICY ?= PASSIVE
# pytest processes (pytest-xdist; each test module stays in one): the world's tiny models keep about one core busy,
# so two use a 2-core machine. TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

.PHONY: install browser demo test test-fast lint results-example clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,gguf,ray]"
	touch $@

install: $(BIN)/.installed

# Headless Chromium, for the tests that open the HTML report in a browser (they skip, saying why, without it).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	echo "chromium is not installed and could not be (needs root and apt-get): the browser tests will skip"

demo: install
	$(BIN)/unlearn-audit demo

test: install browser
	$(PYTEST)

# Everything but the tests marked slow (those that train or audit models on the embedded world).
test-fast: install browser
	$(PYTEST) -m "not slow"

lint: install
	$(BIN)/ruff check auditor attacks probes reports tests bench scripts
	$(BIN)/ruff format --check auditor attacks probes reports tests bench scripts
	$(BIN)/mypy

# docs/results-example.json, which the report tests render, from a real audit of the world's quant-hide control.
results-example: install
	$(BIN)/python scripts/results_example.py

clean:
	rm -rf $(VENV) .cache runs
