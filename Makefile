# `make test` sets up .venv (if missing) and Fashion-MNIST (for the shipped model's test), then
# runs the test suite once per Keras backend.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=

.PHONY: venv test

$(VENV)/.installed: pyproject.toml requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -r requirements-bench.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

test: venv fashion-mnist-data
	@failed=""; \
	for backend in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(PY) -m pytest $(PYTEST_ARGS) || failed="$$failed $$backend"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED on:$$failed"; exit 1; fi; \
	echo "All backends passed: $(BACKENDS)"

# `make demo`: set up, get Fashion-MNIST, train the fashion_mnist recipe's short CPU schedule
# (about 10 minutes on 2 cores), evaluate on the test set, write plots and a model card.
DEMO_DIR ?= runs/demo
DEMO_BACKEND ?= tensorflow
DEMO_MINUTES ?= 8
FASHION_MNIST_DEB_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo fashion-mnist-data

fashion-mnist-data:
	@if [ -f $(FASHION_MNIST_DEB_DIR)/t10k-labels-idx1-ubyte.gz ]; then \
		echo "Fashion-MNIST: using Debian's dataset-fashion-mnist in $(FASHION_MNIST_DEB_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq >/dev/null 2>&1 && \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; then \
		echo "Fashion-MNIST: installed Debian's dataset-fashion-mnist"; \
	else \
		echo "Fashion-MNIST: no Debian package here; the recipe downloads it with TFDS"; \
	fi

demo: venv fashion-mnist-data
	KERAS_BACKEND=$(DEMO_BACKEND) $(PY) -m recipes.fashion_mnist --schedule demo \
		--output-dir $(DEMO_DIR) --time-budget-minutes $(DEMO_MINUTES) --no-resume --export
	@echo "Demo done: model, metrics, plots, model card and TFLite files are in $(DEMO_DIR)/ (listed above)."
