"""`hydra/sweeper=mnist_optuna`: Optuna search over Hydra overrides, resumable and with pruning.

Why our own: the released hydra-optuna-sweeper requires optuna<3, its SQLite storage breaks with
SQLAlchemy 2, and it gives jobs no trial to report to, so nothing can be pruned. This one keeps its
option names (`storage`, `study_name`, `n_trials`, `n_jobs`, `direction`, `params` in Hydra's sweep
syntax) and runs each trial through the configured Hydra launcher (basic, joblib, submitit).

Pruning: each job gets `optuna_trial={storage, study_name, number}`; the training run's pruning
callback reports `val/acc` per epoch to that trial and stops early when the pruner says so, then
marks its metrics.json `pruned`, which this sweeper tells the study.
"""


import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_lightning_optuna.optuna_sweeper.OptunaSweeper"
    study_name: str = "mnist"
    # null: sqlite:///outputs/studies/<study_name>.db, so the same command resumes the same study
    storage: Any = None
    direction: str = "maximize"
    # trials to run in this invocation (earlier trials of the study are kept and inform the sampler)
    n_trials: int = 20
    # trials launched together (in parallel with a parallel launcher such as joblib)
    n_jobs: int = 1
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner",
                                                 "n_startup_trials": 5, "n_warmup_steps": 1})
    # the search space: override key -> Hydra sweep syntax, e.g. "tag(log, interval(1e-4, 1e-2))"
    params: dict = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="mnist_optuna", node=OptunaSweeperConf,
                             provider="mnist_lightning")


def distribution(key: str, spec: str):
    """A Hydra sweep expression -> an Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = OverridesParser.create().parse_override(f"{key}={spec}").value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        return CategoricalDistribution(list(range(int(value.start), int(value.stop), int(value.step))))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"hydra.sweeper.params.{key}={spec}: use choice(...), range(...) or interval(...)")


class OptunaSweeper(Sweeper):
    def __init__(self, study_name: str, storage: Any, direction: str, n_trials: int, n_jobs: int,
                 sampler: Any, pruner: Any, params: dict) -> None:
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs = n_trials, max(1, n_jobs)
        # Hydra builds the sweeper recursively: sampler and pruner arrive as Optuna objects
        self.sampler, self.pruner, self.params = sampler, pruner, dict(params or {})
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        # the jobs load the study themselves and need the same pruner to decide about their trial
        self.pruner_override = _override_value(OmegaConf.to_container(config.hydra.sweeper.pruner, resolve=True))
        HydraConfig.instance().set_config(config)  # lets ${hydra:...} in paths.outputs_root resolve here
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def _storage_url(self) -> str:
        if self.storage:
            url = str(self.storage)
        else:
            root = Path(OmegaConf.select(self.config, "paths.outputs_root", default="outputs"))
            url = f"sqlite:///{(root / 'studies' / f'{self.study_name}.db').resolve()}"
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return url

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        parser = OverridesParser.create()
        fixed, space = [], {key: distribution(key, spec) for key, spec in self.params.items()}
        for override in parser.parse_overrides(arguments):
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(override.get_key_element(),
                                                                 override.get_value_element_as_str())
            else:
                fixed.append(override.input_line)
        storage = self._storage_url()
        study = optuna.create_study(study_name=self.study_name, storage=storage, direction=self.direction,
                                    sampler=self.sampler, pruner=self.pruner,
                                    load_if_exists=True)
        earlier = len(study.trials)
        log.info("Study %s in %s: %d earlier trials, %d to run", self.study_name, storage, earlier, self.n_trials)

        remaining = self.n_trials
        while remaining > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            batch = []
            for trial in trials:
                handle = (f"optuna_trial={{storage:'{storage}',study_name:'{self.study_name}',"
                          f"number:{trial.number},pruner:{self.pruner_override}}}")
                params = [f"{k}={v}" for k, v in trial.params.items()]
                batch.append([*fixed, *params, handle])
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, result in zip(trials, returns, strict=True):
                self._tell(study, trial, result)
            remaining -= len(trials)

        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        summary = {"study_name": self.study_name, "storage": storage, "trials": len(study.trials),
                   "states": {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}}
        if finished:
            summary |= {"best_value": study.best_value, "best_params": study.best_params,
                        "best_trial": study.best_trial.number}
            log.info("Best %s: %s with %s", self.direction, study.best_value, study.best_params)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "optimization_results.json").write_text(json.dumps(summary, indent=2) + "\n")

    @staticmethod
    def _tell(study, trial, result) -> None:
        import optuna

        state = _job_state(result)
        if state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("Trial %d pruned", trial.number)
            return
        try:
            value = float(result.return_value)
        except Exception as exc:  # the job failed or returned nothing: the study goes on without it
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("Trial %d failed: %s", trial.number, exc)
            return
        study.tell(trial, value)
        log.info("Trial %d: %s", trial.number, value)


def _override_value(value) -> str:
    """A plain value as Hydra override syntax: {a:1,b:'text'}."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def _job_state(result) -> str | None:
    try:
        run_dir = Path(result.hydra_cfg.hydra.runtime.output_dir)
        return json.loads((run_dir / "metrics.json").read_text()).get("state")
    except Exception:
        return None
