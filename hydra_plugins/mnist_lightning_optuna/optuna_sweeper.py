"""`hydra/sweeper=mnist_optuna`: Optuna search over Hydra overrides, resumable and with pruning.

Why our own: the released hydra-optuna-sweeper requires optuna<3, its SQLite storage breaks with
SQLAlchemy 2, and it gives jobs no trial to report to, so nothing can be pruned. This one keeps its
option names (`storage`, `study_name`, `n_trials`, `n_jobs`, `direction`, `params` in Hydra's sweep
syntax) and runs each trial through the configured Hydra launcher (basic, joblib, submitit).

The study lives in a journal file (Optuna's JournalStorage, safe for parallel trials on one machine)
under `<paths.outputs_root>/studies/`, or in any storage URL given as `storage`: with a database server
(`postgresql+psycopg://...`) sweepers on several machines share one study, each asking for its own trials.
A trial whose sweeper died is failed and queued again with its parameters (up to `max_retry` times): by
Optuna's heartbeat on a database (any machine), by its process id on this machine otherwise. Each job gets
`optuna_trial={storage, study_name, number, pruner}`; the training run's pruning callback reports
`optimized_metric` after every validation and stops early when the pruner says so, then marks its
metrics.json `pruned`, which this sweeper tells the study.
"""

import contextlib
import copy
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_lightning_optuna.optuna_sweeper.OptunaSweeper"
    study_name: str = "mnist"
    # null: the journal file <paths.outputs_root>/studies/<study_name>.journal, so the same command resumes
    # the same study; or a database URL (sqlite:///..., postgresql://...) or another journal file's path
    storage: Any = None
    direction: str = "maximize"
    # trials to run in this invocation (earlier trials of the study are kept and inform the sampler)
    n_trials: int = 20
    # trials launched together (in parallel with a parallel launcher such as joblib)
    n_jobs: int = 1
    # trial N draws with the sampler seeded seed + N: a new study repeats, a resumed or shared one draws new points
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    # a database storage only: the sweeper records a heartbeat for its running trials every this many seconds,
    # and a trial without one for grace_period seconds (null: twice the interval) is failed by any sweeper
    heartbeat_interval: Any = 60
    grace_period: Any = None
    # a trial failed because its sweeper died is queued again with the same parameters, at most this often
    max_retry: int = 2
    # null: no pruning
    pruner: Any = field(
        default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 1}
    )
    # the search space: override key -> Hydra sweep syntax, e.g. "tag(log, interval(1e-4, 1e-2))"
    params: dict = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="mnist_optuna", node=OptunaSweeperConf, provider="mnist_lightning"
)


class SearchError(CompactHydraException):
    """A setting that would make every trial fail: Hydra prints this one line and exits."""


def shown(spec: str) -> str:
    """A storage URL as it may be printed: its password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", spec)


@contextlib.contextmanager
def storage_errors(spec: str):
    """Opening the study's storage: a database that cannot be reached or a URL no driver reads becomes one line
    naming the setting (SearchError) instead of SQLAlchemy's traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    setting = f"hydra.sweeper.storage={shown(spec)}"
    if "://" in spec:
        try:
            make_url(spec)
        except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
            raise SearchError(f"{setting}: not a database URL ({shown(str(exc))})") from None
    try:
        yield
    except NoSuchModuleError:
        scheme = spec.split("://", 1)[0]
        raise SearchError(
            f"{setting}: no database driver reads {scheme}:// URLs; give a PostgreSQL, MySQL or SQLite URL "
            f"(postgresql+psycopg://..., mysql+pymysql://..., sqlite:///...) or a journal file's path"
        ) from None
    except ImportError as exc:  # Optuna raises its own, from the driver's ModuleNotFoundError
        if "://" not in spec:
            raise  # a journal file needs no driver: not the storage's doing
        name = exc.name or getattr(exc.__cause__, "name", None) or "the URL names"
        extra = " (pip install -e '.[postgres]')" if name.startswith("psycopg") else ""
        raise SearchError(f"{setting}: the database driver {name} is not installed{extra}") from None
    except OperationalError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        raise SearchError(
            f"{setting}: the study's database cannot be opened ({shown(reason[0])}); check the host, port, user, "
            f"password and database name, and that the server is running"
        ) from None


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
    def __init__(
        self,
        study_name: str,
        storage: Any,
        direction: str,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: dict,
        heartbeat_interval: Any = 60,
        grace_period: Any = None,
        max_retry: int = 2,
    ) -> None:
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.heartbeat_interval, self.grace_period, self.max_retry = heartbeat_interval, grace_period, max_retry
        for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise SearchError(f"hydra.sweeper.{name}={value!r}: give whole seconds >= 1, or null")
        if not isinstance(max_retry, int) or isinstance(max_retry, bool) or max_retry < 0:
            raise SearchError(f"hydra.sweeper.max_retry={max_retry!r}: give a whole number >= 0")
        self.n_trials, self.n_jobs = n_trials, max(1, n_jobs)
        # Hydra builds the sweeper recursively: sampler and pruner arrive as Optuna objects
        self.sampler, self.pruner, self.params = sampler, pruner, dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        # the jobs load the study themselves and need the same pruner to decide about their trial
        self.pruner_override = _override_value(OmegaConf.to_container(config.hydra.sweeper.pruner, resolve=True))
        HydraConfig.instance().set_config(config)  # lets ${hydra:...} in paths.outputs_root resolve here
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _storage_spec(self) -> str:
        if self.storage:
            spec = str(self.storage)
            if spec.startswith("sqlite:///"):
                Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            elif "://" not in spec:
                Path(spec).parent.mkdir(parents=True, exist_ok=True)
            return spec
        root = Path(OmegaConf.select(self.config, "paths.outputs_root", default="outputs"))
        path = (root / "studies" / f"{self.study_name}.journal").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from mnist_lightning.training.pruning import Heartbeat, open_storage, pruner_or_none

        # the heartbeat and its retry are marked experimental, and Optuna expects them with Study.optimize; this
        # sweeper asks and tells, and records the heartbeat itself (Heartbeat) as Study.optimize would
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        self._check_optimized_metric()
        parser = OverridesParser.create()
        fixed, space = [], {key: distribution(key, spec) for key, spec in self.params.items()}
        for override in parser.parse_overrides(arguments):
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(
                    override.get_key_element(), override.get_value_element_as_str()
                )
            else:
                fixed.append(override.input_line)
        spec = self._storage_spec()
        retry = Retry(self.max_retry)
        with storage_errors(spec):
            storage = open_storage(spec, heartbeat=(self.heartbeat_interval, self.grace_period), retry=retry)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                direction=self.direction,
                sampler=self.sampler,
                pruner=pruner_or_none(self.pruner),
                load_if_exists=True,
            )
        log.info(
            "Study %s in %s: %d earlier trials, %d to run here",
            self.study_name,
            shown(spec),
            len(study.trials),
            self.n_trials,
        )

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        remaining = self.n_trials
        while remaining > 0:
            _fail_abandoned(study, storage, retry)
            trials = [self._ask(study, space) for _ in range(min(self.n_jobs, remaining))]
            with Heartbeat(storage, self.study_name, [t.number for t in trials]):
                returns, launched = self._launch(study, trials, fixed, spec, sweep_dir)
            self.job_idx += len(returns)
            for trial, result in zip(launched, returns, strict=True):
                self._tell(study, trial, result)
            remaining -= len(trials)

        self._write_results(study, spec, sweep_dir)

    def _launch(self, study, trials: list, fixed: list[str], spec: str, sweep_dir: Path) -> tuple[list, list]:
        """Run the trials' jobs through the launcher: (their results, the trials launched); a trial whose sampled
        configuration does not compose fails alone."""
        from mnist_lightning.cli import overrides

        batch, launched = [], []
        for trial in trials:
            handle = "optuna_trial=" + _override_value(
                {"storage": spec, "study_name": self.study_name, "number": trial.number},
                pruner=self.pruner_override,
            )
            params = [overrides.assign(k, v) if isinstance(v, str) else f"{k}={v}" for k, v in trial.params.items()]
            job = [*fixed, *params, handle]
            try:
                self.validate_batch_is_legal([job])
            except Exception as exc:  # this sampled configuration does not compose: only its trial fails
                self._fail_uncomposable(study, trial, job, sweep_dir / str(self.job_idx), exc)
                self.job_idx += 1
                continue
            batch.append(job)
            launched.append(trial)
        return (self.launcher.launch(batch, initial_job_idx=self.job_idx) if batch else []), launched

    def _ask(self, study, space: dict):
        """A new trial (or one queued again after its sweeper died, which keeps its parameters), its parameters drawn
        by the sampler seeded with seed + the trial's number: a new study is repeatable, a resumed one draws new
        points, and sweepers started together on one study do not draw the same ones."""
        from mnist_lightning.runs.lock import this_process

        trial = study.ask()
        trial.set_user_attr("sweeper", this_process())  # a trial whose sweeper died is failed later
        sampler = self._sampler_for(trial.number)
        if sampler is not None:
            study.sampler = sampler
        for name, dist in space.items():
            suggest(trial, name, dist)
        return trial

    def _sampler_for(self, number: int):
        from hydra.utils import instantiate

        node = OmegaConf.to_container(self.config.hydra.sweeper.sampler, resolve=True)
        if not isinstance(node, dict) or node.get("seed") is None:
            return None
        node["seed"] = int(node["seed"]) + number
        return instantiate(node)

    def _check_optimized_metric(self) -> None:
        """Stop before the first trial when `optimized_metric` names a metric the model never logs."""
        from hydra.utils import get_class

        name = OmegaConf.select(self.config, "optimized_metric")
        target = OmegaConf.select(self.config, "model._target_")
        try:
            known = getattr(get_class(target), "METRICS", None) if target else None
        except Exception:  # the model class cannot be imported here: the jobs will say so
            known = None
        if not name:
            raise SearchError("optimized_metric is not set: the search needs the metric each trial returns")
        if known is not None and name not in known:
            raise SearchError(
                f"optimized_metric={name}: the model logs no such metric; choose one of {', '.join(known)}"
            )

    def _fail_uncomposable(self, study, trial, job: list[str], job_dir: Path, exc: Exception) -> None:
        import optuna

        from mnist_lightning.runs import layout, record

        error = f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"
        layout.write_metrics(job_dir, record.failed(job_dir, error, overrides=job))
        trial.set_user_attr("job_dir", str(job_dir))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("Trial %d failed: its configuration does not compose (%s)", trial.number, error)

    @staticmethod
    def _tell(study, trial, result) -> None:
        import optuna

        job_dir = _job_dir(result)
        try:
            if job_dir is not None:
                trial.set_user_attr("job_dir", str(job_dir))
            state = _job_state(job_dir)
            if state == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
                log.info("Trial %d pruned", trial.number)
                return
            try:
                value = float(result.return_value)
            except Exception as exc:  # the job failed or returned nothing: the study goes on without it
                study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                log.warning("Trial %d failed: %s", trial.number, exc)
                return
            study.tell(trial, value, skip_if_finished=True)
            log.info("Trial %d: %s", trial.number, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            # its heartbeat was missing for longer than the grace period (this machine paused, the database was
            # away), so another sweeper failed it and queued it again; the retry stands, this result is dropped
            log.warning(
                "Trial %d was failed by another sweeper while it ran: its result (%s) is dropped", trial.number, job_dir
            )

    def _write_results(self, study, spec: str, sweep_dir: Path) -> None:
        import optuna

        from mnist_lightning.runs import atomic

        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        summary = {
            "study_name": self.study_name,
            "storage": shown(spec),
            "n_trials": len(trials),
            "states": {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState},
            # trial number -> its job folder, parameters and outcome (earlier invocations' trials too)
            "trials": [
                {
                    "number": t.number,
                    "state": t.state.name,
                    "value": t.value,
                    "params": t.params,
                    "job_dir": t.user_attrs.get("job_dir"),
                }
                for t in trials
            ],
        }
        if finished:
            summary |= {
                "best_value": study.best_value,
                "best_params": study.best_params,
                "best_trial": study.best_trial.number,
                "best_job_dir": study.best_trial.user_attrs.get("job_dir"),
            }
            log.info("Best %s: %s with %s", self.direction, study.best_value, study.best_params)
        atomic.write_text(sweep_dir / "optimization_results.json", json.dumps(summary, indent=2) + "\n")


def suggest(trial, name: str, dist):
    """Draw parameter `name` from `dist` through the trial's public suggest_* methods (a queued trial keeps its own)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


class Retry:
    """Queues a trial whose sweeper died again, with its parameters (Optuna's RetryHeartbeatStaleTrialCallback), less
    the dead sweeper's process and job folder: the copy is nobody's orphan until a sweeper takes it."""

    def __init__(self, max_retry: int | None) -> None:
        import optuna

        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study, trial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("sweeper", "job_dir")}
        self.retry(study, trial)


def _fail_abandoned(study, storage, retry) -> None:
    """Trials whose sweeper died are marked FAIL and queued again with their parameters (`retry`): on a database,
    those without a heartbeat for the grace period (any machine, Optuna's own check); and, on any storage, those
    left running by a process of this machine that is gone."""
    import optuna

    from mnist_lightning.runs.lock import process_alive

    optuna.storages.fail_stale_trials(study)  # calls `retry` for each trial it fails
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("sweeper")
        if not isinstance(owner, dict) or process_alive(owner):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            failed_here = storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another sweeper was first
            continue
        if failed_here:
            retry(study, storage.get_trial(trial_id))
            log.warning(
                "Trial %d was left running by process %s, which is gone: marked failed and queued again",
                trial.number,
                owner.get("pid"),
            )


def _override_value(value, pruner: str | None = None) -> str:
    """A plain value as Hydra override syntax: {a:1,b:'text'}; `pruner` is added as already-written syntax."""
    from mnist_lightning.cli.overrides import quote

    if isinstance(value, dict):
        items = [f"{k}:{_override_value(v)}" for k, v in value.items()]
        if pruner is not None:
            items.append(f"pruner:{pruner}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, str):
        return quote(value)
    return str(value)


def _job_dir(result) -> Path | None:
    try:
        return Path(result.hydra_cfg.hydra.runtime.output_dir)
    except Exception:
        return None


def _job_state(job_dir: Path | None) -> str | None:
    if job_dir is None:
        return None
    try:
        return json.loads((job_dir / "metrics.json").read_text()).get("state")
    except (OSError, ValueError):
        return None
