"""The request and response bodies of the service, as pydantic models: they are the OpenAPI schema at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator


class Prediction(BaseModel):
    prediction: int | None = Field(description="the digit, 0-9; null when no digit was found", ge=0, le=9)
    confidence: float | None = Field(description="the probability of that digit")
    probabilities: list[float] | None = Field(
        description="the probability of each digit 0-9", min_length=10, max_length=10
    )
    inverted: bool = Field(description="dark ink on a light background was inverted to MNIST's light on dark")
    reason: str | None = Field(None, description="why there is no prediction (a blank image)")
    model_version: str = Field(description="the answering model's id: a prefix of its checkpoint's sha256")
    request_id: str = Field(description="names this answer for POST /feedback")


class BatchItem(BaseModel):
    filename: str
    prediction: int | None = Field(None, ge=0, le=9)
    confidence: float | None = None
    probabilities: list[float] | None = Field(None, min_length=10, max_length=10)
    inverted: bool | None = None
    reason: str | None = Field(None, description="why there is no prediction (a blank image)")
    error: str | None = Field(None, description="why this file could not be read; the other files are answered")
    status: int = Field(description="the status this file alone would have got: 200, 400, 413 or 503")
    request_id: str | None = Field(None, description="names this answer for POST /feedback")


class BatchPrediction(BaseModel):
    model_version: str
    results: list[BatchItem] = Field(description="one entry per uploaded file, in the order they were sent")


class Health(BaseModel):
    status: Literal["ok"]
    model_version: str


class ModelInfo(BaseModel):
    model_version: str
    network: str = Field(description="the network's name, e.g. cnn")
    runtime: str = Field(description="what runs it: torch, or onnxruntime (runtime=onnx)")
    network_args: dict[str, Any]
    metrics: dict[str, Any] = Field(
        description="the run's test and validation figures; with details, its whole metrics.json (lineage included)"
    )
    details: bool = Field(
        description="whether the fields below are shown: to callers with the token, or to all "
        "with auth.public_details=true"
    )
    checkpoint: str | None = Field(None, description="the checkpoint's path on the server (details only)")
    run_dir: str | None = Field(None, description="the training run folder the checkpoint belongs to (details only)")


class ErrorDetail(BaseModel):
    detail: str = Field(description="what is wrong with the request and how to send it right")


class FieldError(BaseModel):
    type: str = Field(description="pydantic's error type, e.g. missing, int_type")
    loc: list[str | int] = Field(description="where: body, query or header, then the field")
    msg: str


class ValidationProblem(BaseModel):
    detail: str = Field(description="what is wrong with the request and how to send it right, in one sentence")
    errors: list[FieldError] = Field(description="every problem FastAPI found, without the values sent")


STATUS_MODELS = {422: ValidationProblem}
DESCRIPTIONS = {
    400: "the body or a file could not be read",
    401: "the route needs the service's token",
    403: "a browser's request from a page of another origin",
    404: "no such answer",
    409: "already done: the first one stands",
    413: "over a size limit",
    422: "the request does not have the fields the route takes",
    429: "too many requests from this client: see Retry-After",
    503: "the server is at a limit, or its prediction log cannot be reached, for now: see Retry-After",
}


def error_responses(*statuses: int) -> dict[int, dict]:
    """The `responses` of a route for these error statuses, each with its body's model, for the OpenAPI schema."""
    return {
        status: {"model": STATUS_MODELS.get(status, ErrorDetail), "description": DESCRIPTIONS[status]}
        for status in statuses
    }


class Feedback(BaseModel):
    request_id: str = Field(description="the request_id of an answer", max_length=64)
    label: int = Field(description="the digit the image really shows", ge=0, le=9)

    @field_validator("label", mode="before")
    @classmethod
    def a_number(cls, label):
        """`true` and `"3"` are not digits (pydantic would take them for 1 and 3); 3.0 is, as JSON Schema's integer."""
        if isinstance(label, bool | str):
            raise ValueError("the label is a digit 0-9 written as a JSON number, e.g. 3")
        return label


class FeedbackRecorded(BaseModel):
    model_version: str
    prediction: int | None
    label: int
    correct: bool


class VersionTally(BaseModel):
    role: Literal["main", "candidate"]
    requests: int = Field(description="images this version answered")
    mean_confidence: float | None
    feedback: int = Field(description="answers whose true label was sent to /feedback")
    accuracy: float | None = Field(description="the share of those it got right")


class ABDecision(BaseModel):
    verdict: Literal["candidate better", "candidate worse", "undecided"]
    look: int | None = Field(description="the look (1, 2, ...) that decided; null while undecided")
    labels: dict[str, int] = Field(description="labels the figures are computed on, per arm (main, candidate)")
    accuracy: dict[str, float | None] = Field(description="each arm's accuracy on those labels")
    difference: float | None = Field(description="candidate's accuracy minus main's")
    interval: list[float] | None = Field(
        description="Newcombe's interval of the difference, at the confidence below", min_length=2, max_length=2
    )
    confidence: float = Field(description="the interval's confidence: 1 - the alpha of the look it belongs to")
    p_value: float | None = Field(description="two-sided, of the two-proportion z-test")
    more_labels_per_arm: int | None = Field(
        description="while undecided: about how many more labels each arm needs to decide a difference of the "
        "size observed; null when decided, or when no difference is observed"
    )
    next_look: int | None = Field(description="while undecided: labels per arm at the next look")


class ABReport(BaseModel):
    fraction: float = Field(description="the share of clients sent to the candidate")
    main: str
    candidate: str | None
    versions: dict[str, VersionTally]
    decision: ABDecision | None = Field(description="the verdict on the candidate; null without one")


class DriftReport(BaseModel):
    model_version: str
    role: Literal["main", "candidate"]
    samples: int = Field(description="observations in the window")
    status: Literal["ok", "warn", "alert", "collecting", "no reference"]
    psi: dict[str, float] = Field(description="Population Stability Index of each statistic against the reference")


class Monitoring(BaseModel):
    window: int = Field(description="the last requests the statistics are computed over")
    min_samples: int = Field(description="observations a model needs in its window before it gets a status")
    thresholds: dict[str, float] = Field(description="PSI from `warn` on is a warning, from `alert` on an alert")
    status: str = Field(description="the main model's status")
    models: list[DriftReport]
