"""The FastAPI application: `create_app(model, settings, candidate)`.

Endpoints are plain `def`s: FastAPI runs them in its thread pool, so decoding, preprocessing and the forward
pass never stall the event loop, and requests in flight at the same time are answered side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, Header, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from mnist_lightning.inference import preprocess
from mnist_lightning.serving.ab import Experiment
from mnist_lightning.serving.drift import DriftMonitor
from mnist_lightning.serving.limits import BodySizeLimit
from mnist_lightning.serving.metrics import RequestMetrics, ServiceMetrics
from mnist_lightning.serving.model import ServedModel
from mnist_lightning.serving.schemas import (
    ABReport,
    BatchItem,
    BatchPrediction,
    DriftReport,
    ErrorDetail,
    Feedback,
    FeedbackRecorded,
    Health,
    ModelInfo,
    Monitoring,
    Prediction,
)

ERRORS = {400: {"model": ErrorDetail}, 413: {"model": ErrorDetail}, 422: {"model": ErrorDetail}}
ClientId = Annotated[
    str | None, Header(description="a stable id of the caller: it keeps answering with the same model in an A/B test")
]


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 10_000_000
    max_batch: int = 64
    max_pixels: int = preprocess.MAX_PIXELS
    ab_fraction: float = 0.2  # the share of clients a candidate model answers, when there is one
    drift_window: int = 500
    drift_warn: float = 0.1
    drift_alert: float = 0.25
    drift_min_samples: int = 200  # observations before a model gets a drift status


def create_app(
    model: ServedModel, settings: ServeSettings | None = None, candidate: ServedModel | None = None
) -> FastAPI:
    settings = settings or ServeSettings()
    app = FastAPI(
        title="mnist_lightning",
        summary="Handwritten digits in, the digit and the probability of each class out.",
        description="Upload an image of one digit (any format Pillow reads) to /predict, or several to "
        "/predict/batch. The drawing page is at /.",
    )
    models = {model.version: model} | ({candidate.version: candidate} if candidate else {})
    roles = {model.version: "main"} | ({candidate.version: "candidate"} if candidate else {})
    experiment = Experiment(model.version, candidate.version if candidate else None, settings.ab_fraction)
    monitors = {
        version: DriftMonitor(
            served.reference,
            settings.drift_window,
            settings.drift_warn,
            settings.drift_alert,
            settings.drift_min_samples,
        )
        for version, served in models.items()
    }
    metrics = ServiceMetrics()
    for version, served in models.items():
        metrics.serving(version, served.net.get("arch", "unknown"), roles[version])
    app.state.model, app.state.candidate, app.state.settings = model, candidate, settings
    app.state.experiment, app.state.monitors, app.state.metrics = experiment, monitors, metrics
    routes: set[str] = set()  # filled in below, once the routes exist
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=routes)  # added last: outermost, counts everything

    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _explain(request, exc), "errors": exc.errors()})

    def decode(upload: UploadFile):
        name = upload.filename or "upload"
        return preprocess.decode_image(upload.file.read(), name, max_pixels=settings.max_pixels)

    def answer(version: str, images: list) -> list[dict]:
        """The answers of model `version`, counted, watched for drift, each with the id feedback refers to."""
        started = time.perf_counter()
        answers = models[version].classify(images)
        metrics.observe_answers(version, [result["prediction"] for result, _ in answers], time.perf_counter() - started)
        results = []
        for result, digit in answers:
            if digit is not None:
                monitors[version].observe(digit, result["prediction"], result["confidence"])
            request_id = experiment.record(version, result["prediction"], result["confidence"])
            results.append({**result, "model_version": version, "request_id": request_id})
        return results

    @app.post("/predict", response_model=Prediction, responses=ERRORS, tags=["predict"])
    def predict(
        file: Annotated[UploadFile, File(description="one image of a digit")], x_client_id: ClientId = None
    ) -> Prediction:
        """The digit in one image, with the probability of each class; prediction null for a blank image."""
        try:
            image = decode(file)
        except preprocess.ImageError as exc:
            raise HTTPException(413 if isinstance(exc, preprocess.ImageTooLarge) else 400, str(exc)) from None
        (result,) = answer(experiment.choose(x_client_id), [image])
        return Prediction(**result)

    @app.post("/predict/batch", response_model=BatchPrediction, responses=ERRORS, tags=["predict"])
    def predict_batch(
        files: Annotated[list[UploadFile], File(description="several images, one digit each")],
        x_client_id: ClientId = None,
    ) -> BatchPrediction:
        """One result per file, in order; a file that cannot be read gets its own error, the others are answered.
        One model answers the whole batch."""
        if len(files) > settings.max_batch:
            raise HTTPException(
                413,
                f"a batch of {len(files)} files is over the limit of {settings.max_batch}: "
                f"split it into several requests",
            )
        version = experiment.choose(x_client_id)
        items: list[BatchItem | None] = [None] * len(files)
        images, places = [], []
        for index, upload in enumerate(files):
            try:
                images.append(decode(upload))
                places.append(index)
            except preprocess.ImageError as exc:
                status = 413 if isinstance(exc, preprocess.ImageTooLarge) else 400
                items[index] = BatchItem(filename=upload.filename or "upload", error=str(exc), status=status)
        for index, result in zip(places, answer(version, images) if images else [], strict=True):
            result.pop("model_version")
            items[index] = BatchItem(filename=files[index].filename or "upload", status=200, **result)
        return BatchPrediction(model_version=version, results=items)

    @app.post("/feedback", response_model=FeedbackRecorded, responses={404: {"model": ErrorDetail}}, tags=["ab"])
    def feedback(body: Feedback) -> FeedbackRecorded:
        """The true label of an earlier answer, named by its request_id: it counts toward that model's accuracy."""
        recorded = experiment.feedback(body.request_id, body.label)
        if recorded is None:
            raise HTTPException(
                404,
                f"request_id {body.request_id}: no answer with that id is awaiting feedback "
                f"(unknown, already given feedback, or forgotten after 100,000 newer answers)",
            )
        return FeedbackRecorded(**recorded)

    @app.get("/ab", response_model=ABReport, tags=["ab"])
    def ab_report() -> ABReport:
        """Per model version: images answered, mean confidence and, from feedback, accuracy."""
        return ABReport(**experiment.report())

    def drift_reports() -> list[DriftReport]:
        reports = []
        for version, monitor in monitors.items():
            report = monitor.report()
            metrics.observe_drift(version, report["psi"])
            reports.append(DriftReport(model_version=version, role=roles[version], **report))
        return reports

    @app.get("/monitoring", response_model=Monitoring, tags=["service"])
    def monitoring() -> Monitoring:
        """Drift: the last requests' statistics against each model's reference, as Population Stability Indexes."""
        reports = drift_reports()
        return Monitoring(
            window=settings.drift_window,
            min_samples=min(settings.drift_min_samples, settings.drift_window),
            status=reports[0].status,
            models=reports,
            thresholds={"warn": settings.drift_warn, "alert": settings.drift_alert},
        )

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """200 once the model is loaded (it is loaded before the server accepts connections)."""
        return Health(status="ok", model_version=model.version)

    @app.get("/model", response_model=ModelInfo, tags=["service"])
    def model_info() -> ModelInfo:
        """The main model: its version id, checkpoint, run folder, network, runtime and the run's metrics."""
        return ModelInfo(
            model_version=model.version,
            checkpoint=str(model.checkpoint),
            run_dir=str(model.run_dir) if model.run_dir else None,
            network=model.net.get("arch", ""),
            runtime=model.runtime,
            network_args={k: v for k, v in model.net.items() if k != "arch"},
            metrics=model.metrics,
        )

    @app.get("/metrics", tags=["service"], response_class=Response)
    def prometheus() -> Response:
        """Requests by route and status, latency histograms, answers and predictions per model version, drift."""
        drift_reports()
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("mnist_lightning.serving") / "page"
    index = (page / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def drawing_page() -> HTMLResponse:
        return HTMLResponse(index)

    app.mount("/static", StaticFiles(directory=str(page)), name="static")
    routes.update(route.path for route in app.routes)
    return app


def _explain(request: Request, exc: RequestValidationError) -> str:
    """FastAPI's validation errors in one sentence a person can act on (the full list stays under `errors`)."""
    missing = [str(error["loc"][-1]) for error in exc.errors() if error.get("type") == "missing"]
    if request.url.path == "/predict/batch" and "files" in missing:
        return (
            "empty batch: no images in the form field 'files'; send them as multipart/form-data, e.g. "
            "curl -F files=@a.png -F files=@b.png .../predict/batch"
        )
    if "file" in missing:
        return (
            "missing form field 'file': send the image as multipart/form-data, e.g. curl -F file=@digit.png .../predict"
        )
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid request')}"
