"""Optuna on the training side: open a study's storage, report the searched metric to a trial, prune.

Only Optuna's public API is used: a storage object's methods (the BaseStorage interface), the study's
pruner and `BasePruner.prune(study, frozen_trial)`, so the trial can live in any process a launcher starts.
"""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def open_storage(spec: str):
    """An Optuna storage: a database URL (`sqlite:///...`, `postgresql://...`) or the path of a journal file.

    A journal file (Optuna's JournalStorage) is safe for several processes on one machine; SQLite can
    answer "database is locked" when parallel trials write at once, so it gets a long lock timeout.
    """
    import optuna

    if "://" in spec:
        engine = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite:") else None
        return optuna.storages.RDBStorage(spec, engine_kwargs=engine)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(spec))


def pruner_or_none(pruner):
    """`null` means no pruning: Optuna itself would fall back to its MedianPruner."""
    import optuna

    return pruner if pruner is not None else optuna.pruners.NopPruner()


class OptunaPruning(Callback):
    """After every validation, reports `monitor` (the search's `optimized_metric`) to trial `number`, and stops
    training when the study's pruner says so. Steps count validations, so several per epoch are all reported
    and trials with different batch sizes are compared at the same share of training."""

    def __init__(self, storage: str, study_name: str, number: int, pruner=None, monitor: str = "val/acc_best"):
        import optuna

        self.storage = open_storage(storage)
        self.study = optuna.load_study(study_name=study_name, storage=self.storage, pruner=pruner_or_none(pruner))
        study_id = self.storage.get_study_id_from_name(study_name)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self.number, self.monitor = number, monitor
        self.pruned_at_epoch: int | None = None
        self.reports = 0
        self.active = not self.storage.get_trial(self.trial_id).state.is_finished()
        if not self.active:
            log.warning(
                "Trial %d of study %s is already finished: training goes on without reporting to it", number, study_name
            )

    @classmethod
    def for_trial(cls, trial, pruner=None, monitor: str = "val/acc_best") -> OptunaPruning:
        """From the `optuna_trial` settings the sweeper gives each trial: storage, study_name, number."""
        return cls(trial.storage, trial.study_name, trial.number, pruner=pruner, monitor=monitor)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.active:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                self.storage.set_trial_intermediate_value(self.trial_id, self.reports, float(value))
                self.reports += 1
                prune = self.study.pruner.prune(self.study, self.storage.get_trial(self.trial_id))
        if trainer.strategy.broadcast(prune):  # every process stops together
            self.pruned_at_epoch = trainer.current_epoch
            trainer.should_stop = True
