"""POST /predict and /predict/batch: images in, the digit and the probability of each class out.

Endpoints are plain `def`s: FastAPI runs them in its thread pool, so decoding, preprocessing and the forward pass
never stall the event loop, and requests in flight at the same time are answered side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Header, HTTPException, UploadFile
from PIL import Image

from mnist_lightning.inference import preprocess
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.serving.ab import Experiment
from mnist_lightning.serving.drift import DriftMonitor
from mnist_lightning.serving.metrics import ServiceMetrics
from mnist_lightning.serving.schemas import BatchItem, BatchPrediction, ErrorDetail, Prediction
from mnist_lightning.serving.state import ExperimentDep, MetricsDep, ModelsDep, MonitorsDep, SettingsDep

router = APIRouter(tags=["predict"])
ERRORS = {400: {"model": ErrorDetail}, 413: {"model": ErrorDetail}, 422: {"model": ErrorDetail}}
ClientId = Annotated[
    str | None, Header(description="a stable id of the caller: it keeps answering with the same model in an A/B test")
]


@dataclass
class Answers:
    """The answers of one model version to decoded images, counted in the metrics, watched for drift and recorded
    by the experiment, each with the request id that /feedback refers to."""

    models: dict[str, LoadedModel]
    experiment: Experiment
    monitors: dict[str, DriftMonitor]
    metrics: ServiceMetrics

    def __call__(self, version: str, images: list[Image.Image]) -> list[dict]:
        started = time.perf_counter()
        answers = self.models[version].classify(images)
        seconds = time.perf_counter() - started
        self.metrics.observe_answers(version, [result["prediction"] for result, _ in answers], seconds)
        results = []
        for result, digit in answers:
            if digit is not None:
                self.monitors[version].observe(digit, result["prediction"], result["confidence"])
            request_id = self.experiment.record(version, result["prediction"], result["confidence"])
            results.append({**result, "model_version": version, "request_id": request_id})
        return results


async def answers(models: ModelsDep, experiment: ExperimentDep, monitors: MonitorsDep, metrics: MetricsDep) -> Answers:
    # async, as the getters in state.py: building it is not worth a turn in the thread pool
    return Answers(models, experiment, monitors, metrics)


AnswersDep = Annotated[Answers, Depends(answers)]


def decode(upload: UploadFile, max_pixels: int) -> Image.Image:
    return preprocess.decode_image(upload.file.read(), upload.filename or "upload", max_pixels=max_pixels)


def status_of(error: preprocess.ImageError) -> int:
    return 413 if isinstance(error, preprocess.ImageTooLarge) else 400


@router.post("/predict", response_model=Prediction, responses=ERRORS)
def predict(
    file: Annotated[UploadFile, File(description="one image of a digit")],
    settings: SettingsDep,
    experiment: ExperimentDep,
    answer: AnswersDep,
    x_client_id: ClientId = None,
) -> Prediction:
    """The digit in one image, with the probability of each class; prediction null for a blank image."""
    try:
        image = decode(file, settings.limits.max_pixels)
    except preprocess.ImageError as exc:
        raise HTTPException(status_of(exc), str(exc)) from None
    (result,) = answer(experiment.choose(x_client_id), [image])
    return Prediction(**result)


@router.post("/predict/batch", response_model=BatchPrediction, responses=ERRORS)
def predict_batch(
    files: Annotated[list[UploadFile], File(description="several images, one digit each")],
    settings: SettingsDep,
    experiment: ExperimentDep,
    answer: AnswersDep,
    x_client_id: ClientId = None,
) -> BatchPrediction:
    """One result per file, in order; a file that cannot be read gets its own error, the others are answered.
    One model answers the whole batch."""
    limit = settings.limits.max_batch
    if len(files) > limit:
        raise HTTPException(
            413, f"a batch of {len(files)} files is over the limit of {limit}: split it into several requests"
        )
    version = experiment.choose(x_client_id)
    items: list[BatchItem | None] = [None] * len(files)
    images, places = [], []
    for index, upload in enumerate(files):
        try:
            images.append(decode(upload, settings.limits.max_pixels))
            places.append(index)
        except preprocess.ImageError as exc:
            items[index] = BatchItem(filename=upload.filename or "upload", error=str(exc), status=status_of(exc))
    for index, result in zip(places, answer(version, images) if images else [], strict=True):
        result.pop("model_version")
        items[index] = BatchItem(filename=files[index].filename or "upload", status=200, **result)
    return BatchPrediction(model_version=version, results=items)
