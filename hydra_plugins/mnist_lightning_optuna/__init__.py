"""A Hydra sweeper for current Optuna: studies that resume, TPE, and pruning of trials."""
