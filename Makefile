# Two commands on a fresh machine:  make serve  (run the service)  /  make test  (run the tests).
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed
# The browser test drives Debian's Chromium: Playwright's own browser download cannot work offline.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install serve test test-kernels test-containers bench docs mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# torch first: sam2 builds against it. (Where pip is capped to a local torch, plain ranges resolve to it.)
	# 2.6 or later: older torch.load(weights_only=True) could run code from a crafted file (CVE-2025-32434).
	$(BIN)/pip install "torch>=2.6" "torchvision>=0.21"
	# sam2 is an sdist with an optional CUDA extension: build it without CUDA and without an isolated
	# build environment (which would download a second torch).
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --no-build-isolation "sam2>=1.1.0"
	# docs too: tests/test_docs.py builds the documentation site as part of the suite.
	$(BIN)/pip install -e ".[test,docs]"
	touch $(STAMP)

install: $(STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

serve: $(STAMP)
	$(BIN)/bgremove serve --host 0.0.0.0

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest

# The parity tests again on the kernels of an AVX2-only CPU and of one with no usable vector extension: each must
# give sam2's masks within float rounding (CI runs this; tests/parity.py).
test-kernels: $(STAMP)
	for isa in avx2 default; do \
	  ATEN_CPU_CAPABILITY=$$isa MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
	    $(BIN)/python -m pytest tests/test_segmenter.py -p no:cacheprovider || exit 1; \
	done

# The image and a two-node Ray cluster of containers, for real (Docker from Debian's packages; see docs/tests.md, "The container check").
test-containers:
	bash scripts/container_check.sh

# The documentation site into site/ (mkdocs.yml): --strict fails on a broken link or anchor, and the hooks in docs/hooks/
# fail on a figure whose JSON file or key is missing under docs/benchmarks/. `$(BIN)/mkdocs serve` while writing.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/bgremove bench --overhead --model tiny

# Mutation testing, a benchmark (not part of `make test`: about an hour on two busy cores): mutmut (the `mutation`
# extra) over the modules users rely on, with their fast unit tests, one worker; the score per module goes to
# docs/benchmarks/mutation.json. MODULES="prompts png" runs only those (their scores alone in the JSON).
mutation: $(STAMP)
	$(BIN)/pip install -q -e ".[mutation]"
	rm -rf mutants
	$(BIN)/python scripts/mutation.py run $(MODULES)
	$(BIN)/python scripts/mutation.py report

clean:
	rm -rf $(VENV) .pytest_cache site
