# `make demo` and `make test` are all a fresh machine needs; both install into .venv/ first when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1
export NO_ALBUMENTATIONS_UPDATE := 1
DEMO := demo
DEMO_ARGS ?= --n-train 1500 --n-test 500 --imbalance 5

.PHONY: install test test-fast demo lint docs bench clean

install: $(BIN)/comp

$(BIN)/comp: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: on this machine it comes from local disk; GPU users keep the build they installed.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

test: install docs
	$(BIN)/ruff check comp tests benchmarks
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The manual (docs/, mkdocs.yml) -> site/; --strict: a broken link or anchor fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

lint: install
	$(BIN)/ruff check comp tests benchmarks

demo: install
	bash scripts/demo.sh $(DEMO) $(DEMO_ARGS)

bench: install
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/predict_throughput.py

clean:
	rm -rf $(DEMO) runs reports site folds/folds.csv submissions/*.csv
