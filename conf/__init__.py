"""The Hydra configs: a package so that Hydra finds them as `pkg://mnist_lightning.conf` once installed."""
