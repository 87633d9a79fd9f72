"""Optuna on the training side: open a study's storage, report the searched metric to a trial, prune.

Only Optuna's public API is used: a storage object's methods (the BaseStorage interface), the study's
pruner and `BasePruner.prune(study, frozen_trial)`, so the trial can live in any process a launcher starts.
"""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def open_storage(spec: str, heartbeat: tuple[int | None, int | None] | None = None, retry=None):
    """An Optuna storage: a database URL (`sqlite:///...`, `postgresql+psycopg://...`) or a journal file's path.

    A journal file (Optuna's JournalStorage) is safe for several processes on one machine; SQLite can
    answer "database is locked" when parallel trials write at once, so it gets a long lock timeout; a
    database server (PostgreSQL, MySQL) is shared by processes on several machines. `heartbeat`
    (interval, grace period in seconds) and `retry` (called with each trial failed for a missing heartbeat)
    turn on Optuna's heartbeat, which only database storages have.
    """
    import optuna

    if "://" in spec:
        engine = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite:") else {"pool_pre_ping": True}
        interval, grace = heartbeat if heartbeat and heartbeat[0] else (None, None)
        options = {"heartbeat_interval": interval, "grace_period": grace}
        return _first_to_create(spec, engine, options | {"heartbeat_stale_trial_callback": retry if interval else None})
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(spec))


def _first_to_create(spec: str, engine: dict, options: dict, attempts: int = 6):
    """RDBStorage, when several processes open a new database at once: all of them create Optuna's tables, and
    all but the first fail on a name the first one has just committed (seen on PostgreSQL with two sweepers
    started together). The tables exist by then, so opening again succeeds."""
    import random
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(spec, engine_kwargs=engine, **options)
        except (IntegrityError, ProgrammingError) as exc:
            if attempt == attempts - 1:
                raise
            log.info("Another process is creating the study's tables (%s); opening again", exc.__class__.__name__)
            time.sleep(0.2 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


class Heartbeat:
    """`with Heartbeat(storage, study_name, numbers):` records a heartbeat for those trials every heartbeat interval
    while the block runs (the trials' jobs), so that a sweeper on another machine can tell this one died. Nothing
    for a storage without a heartbeat (a journal file, or a database with `heartbeat_interval: null`)."""

    def __init__(self, storage, study_name: str, numbers: list[int]) -> None:
        import threading

        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.storage, self.interval, self.ids = storage, interval, []
        if interval and numbers:
            study_id = storage.get_study_id_from_name(study_name)
            self.ids = [storage.get_trial_id_from_study_id_trial_number(study_id, n) for n in numbers]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def _beat(self) -> None:
        while True:
            for trial_id in self.ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # the database is away for a moment: the next beat tries again
                    log.warning("Could not record the heartbeat of trial %d: %s", trial_id, exc)
            if self.stopped.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        if self.ids:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()


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
