# Two commands on a fresh machine: `make train` and `make test`. Both install into .venv first.
# `make help` lists every target; the text after `##` on a target's line is its help.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install only when the dependencies change: a second `make install` does nothing.
STAMP := $(VENV)/.installed
# what lint and format look at
CODE := mnist_lightning conf tests benchmarks hydra_plugins tools notebooks

.PHONY: help install lock data train evaluate predict serve export register retrain promote examples sweep search summary tensorboard \
	notebooks benchmark benchmark-quick test test-fast lint format clean wheelhouse base-image image

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv and install the package with every extra (dev)

# requirements.lock pins every package to the version CI tested (`make lock` refreshes it); pip takes it as
# constraints, so `pip install -e '.[dev]'` without the lock still works, with the newest allowed versions.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# pip's own configured constraints (pip config), so that the lock holds only what this pip may install
PIP_CONSTRAINTS = $(shell $(BIN)/python -m pip config list 2>/dev/null | sed -n "s/^global.constraint='\(.*\)'/\1/p")
lock: install ## re-resolve requirements.lock from pyproject.toml with uv: every extra, any platform, Python >= 3.10
	test -x $(BIN)/uv || $(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.10 --no-header --no-annotate \
		$(foreach c,$(PIP_CONSTRAINTS),-c $(c)) -o requirements.lock

DATA ?= $(if $(MNIST_DATA_DIR),$(MNIST_DATA_DIR),data)
data: install ## download and verify MNIST in data/MNIST/raw, or in $MNIST_DATA_DIR when set (training also does it)
	$(BIN)/python -m mnist_lightning.data.files "$(DATA)"

train: install ## train the seed CNN for 5 epochs; ARGS="trainer.max_epochs=10 data.batch_size=128"
	$(BIN)/python -m mnist_lightning.train $(ARGS)

evaluate: install ## reports for the best run on the 10,000 test images; ARGS="model_ref=latest"
	$(BIN)/python -m mnist_lightning.evaluate $(ARGS)

IMAGE ?= examples
predict: install ## predict the images in examples/ (or IMAGE=my_digit.png)
	$(BIN)/python -m mnist_lightning.predict image=$(IMAGE) $(ARGS)

serve: install ## the REST API and drawing page for the best run on http://localhost:8000; ARGS="port=8080"
	$(BIN)/python -m mnist_lightning.serve $(ARGS)

export: install ## model.onnx, model.pt2 and model.json for the best run, verified on the test set
	$(BIN)/python -m mnist_lightning.export $(ARGS)

ALIAS ?= champion
retrain: install ## fine-tune the champion on the labelled answers of the prediction log; registers the challenger
	$(BIN)/python -m mnist_lightning.retrain $(ARGS)

promote: install ## move the champion alias to the challenger when /ab's verdict is "candidate better" (ARGS=force=true)
	$(BIN)/python -m mnist_lightning.promote $(ARGS)

register: install ## file the best run in the MLflow registry as mnist-<network>, alias champion (ALIAS=challenger)
	$(BIN)/python -m mnist_lightning.register alias=$(ALIAS) $(ARGS)

examples: install ## rewrite examples/ from the MNIST test set (DATA=folder holding MNIST/raw)
	$(BIN)/python tools/renderings.py $(DATA) examples

sweep: install ## a 2x2 grid of one-epoch runs in outputs/multirun/<date>/<time>/<job>/
	$(BIN)/python -m mnist_lightning.train -m model.optimizer.lr=1e-3,3e-3 data.batch_size=64,128 \
		trainer.max_epochs=1 $(ARGS)

N_TRIALS ?= 20
STORAGE ?=
search: install ## Optuna search; again continues the study (N_TRIALS=20 more; STORAGE=postgresql+psycopg://... shared)
	$(BIN)/python -m mnist_lightning.train -m hparams_search=optuna hydra.sweeper.n_trials=$(N_TRIALS) \
		$(if $(STORAGE),"hydra.sweeper.storage='$(STORAGE)'") $(ARGS)

DIR ?= outputs
summary: install ## table of the runs under DIR (a sweep folder, default all of outputs/)
	$(BIN)/python -m mnist_lightning.summarize $(DIR)

# The container image (docs/container.md): RUNTIME=onnx (no torch; needs `make export`) or RUNTIME=torch.
# BASE_IMAGE defaults to the Dockerfile's (python:3.11-slim-bookworm, from a registry); `make base-image` builds a
# Debian one without a registry. TORCH_INDEX=https://download.pytorch.org/whl/cpu puts the CPU-only torch in the
# torch image. pip wheel builds the wheelhouse for the Python running it (sources without a wheel, such as Hydra's
# antlr4 runtime, are built too), so it runs on CPython 3.11 as the image's Python is.
RUNTIME ?= onnx
TAG ?= mnist-lightning:$(RUNTIME)
BASE_IMAGE ?=
TORCH_INDEX ?=
ENGINE ?= docker
WHEELHOUSE_STAMP = build/wheelhouse/.built-$(RUNTIME)
wheelhouse: $(WHEELHOUSE_STAMP) ## the wheels the image installs (RUNTIME=onnx|torch) in build/wheelhouse/, pinned by the lock

# made again only when the lock, the dependencies or the runtime change (make -B wheelhouse forces it); one
# runtime's wheels at a time, so that the build context holds only those
$(WHEELHOUSE_STAMP): requirements.lock pyproject.toml container/onnx-requirements.txt | $(STAMP)
	@$(BIN)/python -c 'import sys, sysconfig; sys.exit(sys.version_info[:2] != (3, 11) or sysconfig.get_platform() != "linux-x86_64")' \
		|| { echo "make wheelhouse: the image runs CPython 3.11 on x86-64 Linux, and .venv has" \
		"$$($(BIN)/python -c 'import sys, sysconfig; print(sys.version.split()[0], sysconfig.get_platform())'):" \
		"run it on such a machine, or inside the base image (docs/container.md)"; exit 1; }
	rm -rf build/wheelhouse
	$(BIN)/python -m pip wheel --quiet --wheel-dir build/wheelhouse -c requirements.lock "setuptools>=77" \
		$(if $(filter onnx,$(RUNTIME)),-r container/onnx-requirements.txt,".[serve,postgres,mlflow]" onnxruntime) \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	rm -f build/wheelhouse/mnist_lightning-*.whl
	echo $(RUNTIME) > build/wheelhouse/RUNTIME
	touch $@

base-image: ## Debian base images made with debootstrap, for machines without a registry (root); COMPOSE=1: also compose's
	CONTAINER_ENGINE=$(ENGINE) container/base_image.sh $(if $(COMPOSE),--compose)

# podman: --format docker keeps the HEALTHCHECK (OCI images have none)
image: $(WHEELHOUSE_STAMP) ## the service's image TAG (default mnist-lightning:onnx); BASE_IMAGE=mnist-lightning-base:bookworm
	$(ENGINE) build $(if $(filter podman,$(ENGINE)),--format docker) --build-arg RUNTIME=$(RUNTIME) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t $(TAG) .

tensorboard: install ## TensorBoard over every run in outputs/
	$(BIN)/tensorboard --logdir outputs

notebooks: install ## open notebooks/ in JupyterLab (from the dev extra) on http://localhost:8888
	$(BIN)/jupyter lab notebooks/

benchmark: install ## every figure beside its baseline -> BENCHMARKS.md (about 30 min on 2 CPU cores)
	$(BIN)/python -m benchmarks.run $(ARGS)

benchmark-quick: install ## the benchmark harness on tiny limits (figures mean nothing)
	$(BIN)/python -m benchmarks.run --quick --out outputs/benchmarks/quick $(ARGS)

# Two pytest processes (pytest-xdist): work goes out by xdist_group, one group per test file (its module fixtures
# built once) except that the files sharing the trained and exported run form one group, longest files first
# (tests/conftest.py), and each process and the commands it starts get one thread per core it has to itself. On
# 2 cores (AMD EPYC, 2026-12-06, in the checkout): 16:09 in two processes with a thread per core each, 12:53 with
# a thread each, 12:30 longest first; three processes: 12:57. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)
test: install ## the whole test suite (what CI runs); ARGS="-k datamodule" for a part, TEST_WORKERS=0 in one process
	$(PYTEST) $(ARGS)

test-fast: install ## the suite without the slow end-to-end runs
	$(PYTEST) -m "not slow" $(ARGS)

lint: install ## ruff check, ruff format --check, hadolint on the Dockerfile, promtool on the alert rules; CI fails on any
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/hadolint Dockerfile
	@command -v promtool >/dev/null || { echo "promtool is missing: apt-get install prometheus (Debian, Ubuntu)," \
		"or the release archive from prometheus.io"; exit 1; }
	promtool check config monitoring/prometheus.yml
	cd monitoring && promtool test rules alerts_test.yml

format: install ## apply ruff format and ruff's safe fixes
	$(BIN)/ruff check --fix $(CODE)
	$(BIN)/ruff format $(CODE)

clean: ## remove .venv and caches (outputs/ stays)
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache build dist
