"""What the Trainer gets beyond Lightning's own: callbacks (epoch throughput), exact resume (random states,
resumability checks), a clean stop on signals, atomic checkpoint files, Optuna pruning, and the choice of
numeric precision for this hardware."""
