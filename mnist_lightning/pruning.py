"""Report validation accuracy to an Optuna trial and stop the run when the pruner says so."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class OptunaPruning(Callback):
    """The trial lives in the study's storage, so this works in any process a launcher starts."""

    def __init__(self, storage: str, study_name: str, number: int, pruner=None, monitor: str = "val/acc"):
        import optuna

        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.monitor = monitor
        self.pruned_at_epoch: int | None = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_at_epoch = trainer.current_epoch
            trainer.should_stop = True
