# Two commands on a fresh machine: `make train` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install only when the dependencies change: a second `make install` does nothing.
STAMP := $(VENV)/.installed

.PHONY: install train test lint tensorboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# make train ARGS="trainer.max_epochs=10 data.batch_size=128"
train: install
	$(BIN)/python -m mnist_lightning.train $(ARGS)

# make test ARGS="-k datamodule"
test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check mnist_lightning tests

tensorboard: install
	$(BIN)/tensorboard --logdir outputs

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
