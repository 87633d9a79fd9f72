"""The FastAPI application: `create_app(model, settings)`.

Endpoints are plain `def`s: FastAPI runs them in its thread pool, so decoding, preprocessing and the forward
pass never stall the event loop, and requests in flight at the same time are answered side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from mnist_lightning.inference import preprocess
from mnist_lightning.serving.limits import BodySizeLimit
from mnist_lightning.serving.metrics import RequestMetrics, ServiceMetrics
from mnist_lightning.serving.model import ServedModel
from mnist_lightning.serving.schemas import BatchItem, BatchPrediction, ErrorDetail, Health, ModelInfo, Prediction

ERRORS = {400: {"model": ErrorDetail}, 413: {"model": ErrorDetail}, 422: {"model": ErrorDetail}}


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 10_000_000
    max_batch: int = 64
    max_pixels: int = preprocess.MAX_PIXELS


def create_app(model: ServedModel, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    app = FastAPI(
        title="mnist_lightning",
        summary="Handwritten digits in, the digit and the probability of each class out.",
        description="Upload an image of one digit (any format Pillow reads) to /predict, or several to "
        "/predict/batch. The drawing page is at /.",
    )
    app.state.model, app.state.settings = model, settings
    metrics = app.state.metrics = ServiceMetrics(model.version, model.net.get("arch", "unknown"))
    routes: set[str] = set()  # filled in below, once the routes exist
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=routes)  # added last: outermost, counts everything

    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _explain(request, exc), "errors": exc.errors()})

    def decode(upload: UploadFile):
        name = upload.filename or "upload"
        return preprocess.decode_image(upload.file.read(), name, max_pixels=settings.max_pixels)

    @app.post("/predict", response_model=Prediction, responses=ERRORS, tags=["predict"])
    def predict(file: Annotated[UploadFile, File(description="one image of a digit")]) -> Prediction:
        """The digit in one image, with the probability of each class; prediction null for a blank image."""
        try:
            image = decode(file)
        except preprocess.ImageError as exc:
            raise HTTPException(413 if isinstance(exc, preprocess.ImageTooLarge) else 400, str(exc)) from None
        (result,) = model.classify([image])
        metrics.observe_prediction(result["prediction"])
        return Prediction(**result, model_version=model.version)

    @app.post("/predict/batch", response_model=BatchPrediction, responses=ERRORS, tags=["predict"])
    def predict_batch(
        files: Annotated[list[UploadFile], File(description="several images, one digit each")],
    ) -> BatchPrediction:
        """One result per file, in order; a file that cannot be read gets its own error, the others are answered."""
        if len(files) > settings.max_batch:
            raise HTTPException(
                413,
                f"a batch of {len(files)} files is over the limit of {settings.max_batch}: "
                f"split it into several requests",
            )
        items: list[BatchItem | None] = [None] * len(files)
        images, places = [], []
        for index, upload in enumerate(files):
            try:
                images.append(decode(upload))
                places.append(index)
            except preprocess.ImageError as exc:
                status = 413 if isinstance(exc, preprocess.ImageTooLarge) else 400
                items[index] = BatchItem(filename=upload.filename or "upload", error=str(exc), status=status)
        for index, result in zip(places, model.classify(images) if images else [], strict=True):
            metrics.observe_prediction(result["prediction"])
            items[index] = BatchItem(filename=files[index].filename or "upload", status=200, **result)
        return BatchPrediction(model_version=model.version, results=items)

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """200 once the model is loaded (it is loaded before the server accepts connections)."""
        return Health(status="ok", model_version=model.version)

    @app.get("/model", response_model=ModelInfo, tags=["service"])
    def model_info() -> ModelInfo:
        """The model being served: its version id, checkpoint, run folder, network and the run's metrics."""
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
        """Requests by route and status, latency histograms, predictions per class, the model version."""
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
