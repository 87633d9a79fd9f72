# Two commands on a fresh machine: `make train` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install only when the dependencies change: a second `make install` does nothing.
STAMP := $(VENV)/.installed

.PHONY: install data train test evaluate predict examples sweep search summary benchmark benchmark-quick lint tensorboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# download MNIST into data/MNIST/raw (training also does it when the files are missing)
data: install
	$(BIN)/python -c "import sys; from mnist_lightning.data import fetch; sys.exit(fetch('data'))"

# make train ARGS="trainer.max_epochs=10 data.batch_size=128"
train: install
	$(BIN)/python -m mnist_lightning.train $(ARGS)

# the best run under outputs/ on the 10,000 test images; make evaluate ARGS="model_ref=latest"
evaluate: install
	$(BIN)/python -m mnist_lightning.evaluate $(ARGS)

# the best run on the example images in examples/; make predict IMAGE=my_digit.png
IMAGE ?= examples
predict: install
	$(BIN)/python -m mnist_lightning.predict image=$(IMAGE) $(ARGS)

# rewrite examples/ from the MNIST test set (DATA=folder holding MNIST/raw)
DATA ?= $(if $(MNIST_DATA_DIR),$(MNIST_DATA_DIR),data)
examples: install
	$(BIN)/python -m mnist_lightning.examples $(DATA) examples

# a 2x2 grid of one-epoch runs, each in outputs/multirun/<date>/<time>/<job>/
sweep: install
	$(BIN)/python -m mnist_lightning.train -m model.optimizer.lr=1e-3,3e-3 data.batch_size=64,128 \
		trainer.max_epochs=1 $(ARGS)

# Optuna search; running it again continues the study in outputs/studies/ with N_TRIALS more trials
N_TRIALS ?= 20
search: install
	$(BIN)/python -m mnist_lightning.train -m hparams_search=optuna hydra.sweeper.n_trials=$(N_TRIALS) $(ARGS)

# table of the runs under DIR (a sweep folder, default all of outputs/)
DIR ?= outputs
summary: install
	$(BIN)/python -m mnist_lightning.summarize $(DIR)

# side by side with the plain-PyTorch baseline: benchmarks/results/<machine>.json and BENCHMARKS.md
# (about 30 min on 2 CPU cores; ARGS="--only inference" for a part)
benchmark: install
	$(BIN)/python benchmarks/run.py $(ARGS)

# the same on tiny limits, to check the harness; writes only under outputs/benchmarks/quick
benchmark-quick: install
	$(BIN)/python benchmarks/run.py --quick --out outputs/benchmarks/quick $(ARGS)

# make test ARGS="-k datamodule"
test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check mnist_lightning tests benchmarks hydra_plugins

tensorboard: install
	$(BIN)/tensorboard --logdir outputs

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
