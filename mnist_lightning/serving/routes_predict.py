"""POST /predict and /predict/batch: images in, the digit and the probability of each class out.

Endpoints are plain `def`s: FastAPI runs them in its thread pool, so decoding, preprocessing and the forward pass
never stall the event loop, and requests in flight at the same time are answered side by side. Each file is
decoded, reduced and prepared on its own, so a batch holds at most one decoded image at a time; the process's
decode budget (serving/limits.py) makes concurrent large decodes take turns.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Header, HTTPException, UploadFile

from mnist_lightning.inference import preprocess, statistics
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.serving.ab import Experiment
from mnist_lightning.serving.access import Caller, CallerDep, same_origin, within_rate
from mnist_lightning.serving.limits import Busy, DecodeBudget
from mnist_lightning.serving.metrics import ServiceMetrics
from mnist_lightning.serving.schemas import BatchItem, BatchPrediction, Prediction, error_responses
from mnist_lightning.serving.settings import Limits
from mnist_lightning.serving.state import (
    DecodeBudgetDep,
    ExperimentDep,
    LogDep,
    MetricsDep,
    ModelsDep,
    SettingsDep,
)
from mnist_lightning.store.log import Answer, PredictionLog

router = APIRouter(
    tags=["predict"],
    dependencies=[Depends(same_origin), Depends(within_rate)],
    responses=error_responses(400, 403, 413, 422, 429, 503),
)
ClientId = Annotated[
    str | None,
    Header(
        max_length=200,
        description="a stable id of the caller: it keeps answering with the same model in an A/B test",
    ),
]


@dataclass
class Answers:
    """The answers of one model version to prepared images: logged (store/) with the request id that /feedback
    refers to, committed before they are returned, then counted in the metrics."""

    models: dict[str, LoadedModel]
    experiment: Experiment
    log: PredictionLog
    metrics: ServiceMetrics

    def __call__(self, version: str, prepared: list[preprocess.Prepared], caller: Caller) -> list[dict]:
        started = time.perf_counter()
        answers = self.models[version].answer(prepared)
        seconds = time.perf_counter() - started
        role = self.experiment.role(version)
        # a token holder's answers are not counted against a client's share of the drift window
        address, client_id = (None, None) if caller.trusted else (caller.address, caller.client_id)
        results, logged = [], []
        for result, digit in answers:
            request_id = uuid.uuid4().hex
            found = digit is not None and result["prediction"] is not None
            logged.append(
                Answer(
                    request_id,
                    version,
                    role,
                    result["prediction"],
                    result["confidence"],
                    digit,
                    statistics.digit_statistics(digit) if found else None,
                    address,
                    client_id,
                    self.experiment.name,
                )
            )
            results.append({**result, "model_version": version, "request_id": request_id})
        self.log.record(logged)  # StoreUnavailable: 503, and no answer is given that the log does not hold
        self.metrics.observe_answers(version, [result["prediction"] for result, _ in answers], seconds)
        return results


async def answers(models: ModelsDep, experiment: ExperimentDep, log: LogDep, metrics: MetricsDep) -> Answers:
    # async, as the getters in state.py: building it is not worth a turn in the thread pool
    return Answers(models, experiment, log, metrics)


AnswersDep = Annotated[Answers, Depends(answers)]


@dataclass
class Decoder:
    """One request's files, each decoded into its 28x28 digit within the request's and the process's budgets."""

    limits: Limits
    budget: DecodeBudget
    spent: int = 0

    def load(self, upload: UploadFile) -> preprocess.Prepared:
        name = upload.filename or "upload"

        @contextlib.contextmanager
        def reserve(cost: int):
            if self.spent + cost > self.limits.max_request_bytes:
                raise preprocess.ImageTooLarge(
                    f"{name}: decoding it takes {cost / 1e6:,.0f} MB and this request's other images already took "
                    f"{self.spent / 1e6:,.0f} of the {self.limits.max_request_bytes / 1e6:,.0f} MB one request may "
                    f"decode: send it in another request"
                )
            with self.budget.reserve(cost):  # counted once granted: a file turned away (503) costs nothing
                self.spent += cost
                yield

        limits = preprocess.DecodeLimits(
            self.limits.max_pixels, self.limits.max_image_bytes, reserve, preprocess.SERVICE_FORMATS
        )
        return preprocess.load_digit(upload.file.read(), name, limits)


async def decoder(settings: SettingsDep, budget: DecodeBudgetDep) -> Decoder:
    return Decoder(settings.limits, budget)


DecoderDep = Annotated[Decoder, Depends(decoder)]


def status_of(error: Exception) -> int:
    return 503 if isinstance(error, Busy) else 413 if isinstance(error, preprocess.ImageTooLarge) else 400


@router.post("/predict", response_model=Prediction)
def predict(
    file: Annotated[UploadFile, File(description="one image of a digit")],
    experiment: ExperimentDep,
    answer: AnswersDep,
    decoder: DecoderDep,
    caller: CallerDep,
    x_client_id: ClientId = None,
) -> Prediction:
    """The digit in one image, with the probability of each class; prediction null for a blank image."""
    try:
        prepared = decoder.load(file)
    except (preprocess.ImageError, Busy) as exc:
        headers = {"Retry-After": "5"} if isinstance(exc, Busy) else None
        raise HTTPException(status_of(exc), str(exc), headers=headers) from None
    (result,) = answer(experiment.choose(x_client_id), [prepared], caller)
    return Prediction(**result)


@router.post("/predict/batch", response_model=BatchPrediction)
def predict_batch(
    files: Annotated[list[UploadFile], File(description="several images, one digit each")],
    settings: SettingsDep,
    experiment: ExperimentDep,
    answer: AnswersDep,
    decoder: DecoderDep,
    caller: CallerDep,
    x_client_id: ClientId = None,
) -> BatchPrediction:
    """One result per file, in order; a file that cannot be read, or is over a limit, gets its own error and status,
    the others are answered. One model answers the whole batch."""
    limit = settings.limits.max_batch
    if len(files) > limit:
        raise HTTPException(
            413, f"a batch of {len(files)} files is over the limit of {limit}: split it into several requests"
        )
    version = experiment.choose(x_client_id)
    items: list[BatchItem | None] = [None] * len(files)
    prepared, places = [], []
    for index, upload in enumerate(files):
        try:
            prepared.append(decoder.load(upload))
            places.append(index)
        except (preprocess.ImageError, Busy) as exc:
            items[index] = BatchItem(filename=upload.filename or "upload", error=str(exc), status=status_of(exc))
    for index, result in zip(places, answer(version, prepared, caller) if prepared else [], strict=True):
        result.pop("model_version")
        items[index] = BatchItem(filename=files[index].filename or "upload", status=200, **result)
    return BatchPrediction(model_version=version, results=items)
