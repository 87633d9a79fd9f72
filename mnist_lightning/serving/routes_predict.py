"""POST /predict and /predict/batch: images in, the digit and the probability of each class out.

Decoding, preprocessing and the forward pass never run on the event loop. /predict is `async`: its image waits
(spooled as an upload is: in memory up to 1 MB, on disk beyond) for the micro-batcher (serving/batching.py),
which answers the requests in flight together on a thread of its own; an image too large to decode in a batch
goes to FastAPI's thread pool alone. /predict/batch is a plain `def`, run in the thread pool. Each file is
decoded, reduced and prepared on its own, so a request holds at most one decoded image at a time; the process's
decode budget (serving/limits.py) makes concurrent large decodes take turns.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, File, Header, HTTPException, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from mnist_lightning.inference import preprocess, statistics
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.serving.ab import Experiment
from mnist_lightning.serving.access import Caller, CallerDep, same_origin, within_rate
from mnist_lightning.serving.batching import MicroBatcher
from mnist_lightning.serving.limits import Busy, DecodeBudget
from mnist_lightning.serving.metrics import ServiceMetrics
from mnist_lightning.serving.schemas import BatchItem, BatchPrediction, Prediction, error_responses
from mnist_lightning.serving.settings import Limits
from mnist_lightning.serving.state import (
    DecodeBudgetDep,
    ExperimentDep,
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
    """The answers of model versions to prepared images: logged (store/) with the request id that /feedback
    refers to, committed before they are returned (one transaction for all), then counted in the metrics."""

    models: dict[str, LoadedModel]
    experiment: Experiment
    log: PredictionLog
    metrics: ServiceMetrics

    def __call__(self, version: str, prepared: list[preprocess.Prepared], caller: Caller) -> list[dict]:
        """One caller's images, answered by one version."""
        return self.many({version: [(ready, caller) for ready in prepared]})[version]

    def many(self, groups: dict[str, list[tuple[preprocess.Prepared, Caller]]]) -> dict[str, list[dict]]:
        """Per version, its images (each with its caller) in one forward pass; the results in the same order."""
        results, logged, observed = {}, [], []
        for version, items in groups.items():
            started = time.perf_counter()
            answers = self.models[version].answer([ready for ready, _ in items])
            observed.append((version, [result["prediction"] for result, _ in answers], time.perf_counter() - started))
            role = self.experiment.role(version)
            results[version] = []
            for (result, digit), (_, caller) in zip(answers, items, strict=True):
                # a token holder's answers are not counted against a client's share of the drift window
                address, client_id = (None, None) if caller.trusted else (caller.address, caller.client_id)
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
                results[version].append({**result, "model_version": version, "request_id": request_id})
        self.log.record(logged)  # StoreUnavailable: 503, and no answer is given that the log does not hold
        for version, predictions, seconds in observed:
            self.metrics.observe_answers(version, predictions, seconds)
        return results


@dataclass
class Decoder:
    """One request's files, each decoded into its 28x28 digit within the request's and the process's budgets."""

    limits: Limits
    budget: DecodeBudget
    # False (in a micro-batch): Busy at once for an image over BATCH_DECODE_BYTES or one the budget has no room for
    # now, rather than holding up the batch while it decodes or waits
    wait: bool = True
    spent: int = 0

    def load(self, data: bytes, name: str) -> preprocess.Prepared:

        @contextlib.contextmanager
        def reserve(cost: int):
            if self.spent + cost > self.limits.max_request_bytes:
                raise preprocess.ImageTooLarge(
                    f"{name}: decoding it takes {cost / 1e6:,.0f} MB and this request's other images already took "
                    f"{self.spent / 1e6:,.0f} of the {self.limits.max_request_bytes / 1e6:,.0f} MB one request may "
                    f"decode: send it in another request"
                )
            if not self.wait and cost > BATCH_DECODE_BYTES:
                raise Busy(f"{name}: decoded on its own")
            # counted once granted: a file turned away (503) costs nothing
            with self.budget.reserve(cost, wait=self.wait):
                self.spent += cost
                yield

        limits = preprocess.DecodeLimits(
            self.limits.max_pixels, self.limits.max_image_bytes, reserve, preprocess.SERVICE_FORMATS
        )
        return preprocess.load_digit(data, name, limits)


async def decoder(settings: SettingsDep, budget: DecodeBudgetDep) -> Decoder:
    return Decoder(settings.limits, budget)


DecoderDep = Annotated[Decoder, Depends(decoder)]

RAW_TYPES = ("image/", "application/octet-stream")  # a request whose body is the image itself
SPOOL_BYTES = 1 << 20  # an image body beyond this waits on disk, as Starlette spools a form's files
BATCH_DECODE_BYTES = 4 << 20  # larger images (over 2 megapixels of grey, 1 of colour) are decoded outside a batch


@dataclass
class Body:
    """A request's body that is the image itself (`Content-Type: image/png`, `image/jpeg`... or
    `application/octet-stream`), read by the same Decoder as an uploaded file."""

    file: BinaryIO
    filename: str = "body"


async def image_body(request: Request) -> AsyncIterator[Body | None]:
    """The body as the image when its Content-Type says it is one (spooled: in memory up to SPOOL_BYTES, then on
    disk); None for a form (or anything else). BodySizeLimit stops it at limits.max_body_bytes."""
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith(RAW_TYPES):
        yield None
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > SPOOL_BYTES:  # on disk from here: written outside the event loop
                await run_in_threadpool(spool.write, chunk)
            else:
                spool.write(chunk)
        spool.seek(0)
        yield Body(spool)


ImageBodyDep = Annotated[Body | None, Depends(image_body)]
MISSING_FILE = [
    {
        "type": "missing",
        "loc": ("body", "file"),
        "msg": "Field required: send the image as the form field 'file', or as the body with Content-Type: "
        "image/png (or the image's own type)",
        "input": None,
    }
]


def status_of(error: Exception) -> int:
    return 503 if isinstance(error, Busy) else 413 if isinstance(error, preprocess.ImageTooLarge) else 400


def refusal(error: preprocess.ImageError | Busy) -> HTTPException:
    headers = {"Retry-After": "5"} if isinstance(error, Busy) else None
    return HTTPException(status_of(error), str(error), headers=headers)


@dataclass
class Job:
    """One /predict request: its image (a file: spooled, not read until it is decoded), the version chosen to answer
    it, and who asked."""

    file: BinaryIO
    name: str
    version: str
    caller: Caller


DEFERRED = "deferred"  # a batch's job with a large image, or no room in the decode budget: answered on its own


@dataclass
class Predictor:
    """/predict's work: decode each job's image, answer them by version in one forward pass each, log all in one
    transaction. With a MicroBatcher (serving.batching.max_batch > 1), requests in flight together share that
    work; without, each request does it alone in the thread pool."""

    answers: Answers
    limits: Limits
    budget: DecodeBudget
    batcher: MicroBatcher | None = None

    async def __call__(self, job: Job) -> dict:
        outcome = DEFERRED if self.batcher is None else await self.batcher.submit(job)
        if outcome is DEFERRED:
            (outcome,) = await run_in_threadpool(self.process, [job], True)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def process(self, jobs: list[Job], wait: bool = False) -> list[dict | HTTPException | str]:
        """One outcome per job: its result, the HTTPException refusing its image, DEFERRED, or the exception that
        broke its decoding (a 500 for that request alone). In a batch (`wait` False) a large image, or one that
        would wait for the decode budget, is left to its own request, so that the others are not held up with it."""
        outcomes: list = [None] * len(jobs)
        groups: dict[str, list[tuple[int, preprocess.Prepared, Caller]]] = {}
        for index, job in enumerate(jobs):
            try:
                job.file.seek(0)
                prepared = Decoder(self.limits, self.budget, wait=wait).load(job.file.read(), job.name)
            except Busy as exc:
                outcomes[index] = refusal(exc) if wait else DEFERRED
            except preprocess.ImageError as exc:
                outcomes[index] = refusal(exc)
            except Exception as exc:  # a file that breaks the decoder: its own request fails, not the batch
                outcomes[index] = exc
            else:
                groups.setdefault(job.version, []).append((index, prepared, job.caller))
        if groups:
            answered = self.answers.many(
                {version: [(ready, caller) for _, ready, caller in items] for version, items in groups.items()}
            )
            for version, items in groups.items():
                for (index, _, _), result in zip(items, answered[version], strict=True):
                    outcomes[index] = result
        return outcomes


async def predictor(request: Request) -> Predictor:
    return request.app.state.predictor


PredictorDep = Annotated[Predictor, Depends(predictor)]


@router.post(
    "/predict",
    response_model=Prediction,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def predict(
    predictor: PredictorDep,
    caller: CallerDep,
    body: ImageBodyDep,
    file: Annotated[UploadFile | None, File(description="one image of a digit")] = None,
    x_client_id: ClientId = None,
) -> Response:
    """The digit in one image, with the probability of each class; prediction null for a blank image. The image
    is the form field `file` (multipart/form-data), or the whole body with its own Content-Type (`image/png`,
    `image/jpeg`, ... or `application/octet-stream`), which skips parsing a form."""
    if body is None and file is None:
        raise RequestValidationError(MISSING_FILE)
    upload = body or file
    version = predictor.answers.experiment.choose(x_client_id)
    # async: the request waits on the event loop; decoding and the model run on the micro-batcher's thread
    result = await predictor(Job(upload.file, upload.filename or "upload", version, caller))
    # checked against the schema here, and written out once: FastAPI does not validate a Response again
    return Response(Prediction(**result).model_dump_json(), media_type="application/json")


@router.post("/predict/batch", response_model=BatchPrediction)
def predict_batch(
    files: Annotated[list[UploadFile], File(description="several images, one digit each")],
    settings: SettingsDep,
    experiment: ExperimentDep,
    predictor: PredictorDep,
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
            prepared.append(decoder.load(upload.file.read(), upload.filename or "upload"))
            places.append(index)
        except (preprocess.ImageError, Busy) as exc:
            items[index] = BatchItem(filename=upload.filename or "upload", error=str(exc), status=status_of(exc))
    for index, result in zip(places, predictor.answers(version, prepared, caller) if prepared else [], strict=True):
        result.pop("model_version")
        items[index] = BatchItem(filename=files[index].filename or "upload", status=200, **result)
    return BatchPrediction(model_version=version, results=items)
