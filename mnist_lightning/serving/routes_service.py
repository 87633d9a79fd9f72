"""The service itself: GET /health, /model, /metrics, /monitoring, and the drawing page at / (its files under
/static are mounted by create_app)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from mnist_lightning.serving.access import CallerDep
from mnist_lightning.serving.drift import drift_report
from mnist_lightning.serving.schemas import DriftReport, Health, ModelInfo, Monitoring, error_responses
from mnist_lightning.serving.state import (
    ExperimentDep,
    LogDep,
    MainModelDep,
    MetricsDep,
    ModelsDep,
    SettingsDep,
)
from mnist_lightning.store.log import StoreUnavailable

router = APIRouter(tags=["service"])
PAGE = resources.files("mnist_lightning.serving") / "page"
INDEX = (PAGE / "index.html").read_text()


def drift_reports(
    models: ModelsDep, experiment: ExperimentDep, log: LogDep, settings: SettingsDep, metrics: MetricsDep
) -> list[DriftReport]:
    """Each model's drift report, main model first, from its last answers in the prediction log. Computing them
    also sets the drift gauges: PSIs are computed when asked for (/monitoring or a Prometheus scrape of /metrics),
    not on every request."""
    reports = []
    for version, served in models.items():
        report = drift_report(served.reference, log, version, settings.monitoring, settings.client_share)
        metrics.observe_drift(version, report["psi"], report["status"])
        reports.append(DriftReport(model_version=version, role=experiment.role(version), **report))
    return reports


@router.get("/health", response_model=Health)
def health(model: MainModelDep) -> Health:
    """200 once the model is loaded (it is loaded before the server accepts connections)."""
    return Health(status="ok", model_version=model.version)


# what every caller sees of a run's metrics.json: its figures, not its paths, commit, packages or machine
PUBLIC_METRICS = ("state", "val/acc_best", "test/acc", "test/loss", "test_samples", "test_split_size", "precision")


@router.get("/model", response_model=ModelInfo)
def model_info(model: MainModelDep, settings: SettingsDep, caller: CallerDep) -> ModelInfo:
    """The main model: its version id, network, runtime and test figures; to callers with the token (or to all with
    auth.public_details=true) also its checkpoint, run folder and the run's whole metrics.json."""
    details = caller.trusted or settings.auth.public_details
    public = {key: model.metrics[key] for key in PUBLIC_METRICS if key in model.metrics}
    return ModelInfo(
        model_version=model.version,
        network=model.net.get("arch", ""),
        runtime=model.runtime,
        network_args={k: v for k, v in model.net.items() if k != "arch"},
        metrics=model.metrics if details else public,
        details=details,
        checkpoint=str(model.checkpoint) if details else None,
        run_dir=str(model.run_dir) if details and model.run_dir else None,
    )


@router.get("/monitoring", response_model=Monitoring, responses=error_responses(503))
def monitoring(settings: SettingsDep, reports: Annotated[list[DriftReport], Depends(drift_reports)]) -> Monitoring:
    """Drift: the last requests' statistics against each model's reference, as Population Stability Indexes."""
    watch = settings.monitoring
    return Monitoring(
        window=watch.window,
        min_samples=watch.samples_needed,
        status=reports[0].status,
        models=reports,
        thresholds={"warn": watch.warn, "alert": watch.alert},
    )


@router.get("/metrics", response_class=Response)
def prometheus(
    models: ModelsDep, experiment: ExperimentDep, log: LogDep, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    """Requests by route and status, latency histograms, answers and predictions per model version, drift, and
    whether the prediction log can be reached (the counters are answered when it cannot: that is when they
    matter)."""
    try:
        drift_reports(models, experiment, log, settings, metrics)
        decision = experiment.decision(log, settings.ab.alpha, settings.ab.first_look)
        if decision is not None:  # the verdict alone: the per-version tallies of /ab are not needed here
            metrics.observe_verdict(experiment.main, experiment.candidate, decision["verdict"])
        metrics.store_available.set(1)
    except StoreUnavailable:
        metrics.store_available.set(0)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def drawing_page() -> HTMLResponse:
    return HTMLResponse(INDEX)
