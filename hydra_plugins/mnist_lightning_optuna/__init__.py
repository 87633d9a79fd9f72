"""A Hydra sweeper for current Optuna: SQLite studies that resume, TPE, and pruning of trials."""
