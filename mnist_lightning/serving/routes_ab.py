"""The A/B test: POST /feedback pairs an earlier answer with its true label, GET /ab compares the models.

Two routers: `feedback` writes labels to the prediction log (create_app puts it behind the token when one is set),
`router` only reads them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from mnist_lightning.serving.access import CallerDep, feedback_allowed, same_origin, within_rate
from mnist_lightning.serving.schemas import ABReport, Feedback, FeedbackRecorded, error_responses
from mnist_lightning.serving.state import ExperimentDep, LogDep, SettingsDep
from mnist_lightning.store.log import AlreadyLabelled, UnknownAnswer

feedback_router = APIRouter(
    tags=["ab"],
    dependencies=[Depends(same_origin), Depends(within_rate), Depends(feedback_allowed)],
    responses=error_responses(400, 403, 404, 409, 413, 422, 429, 503),
)
router = APIRouter(tags=["ab"], responses=error_responses(503))


@feedback_router.post("/feedback", response_model=FeedbackRecorded)
def feedback(body: Feedback, log: LogDep, caller: CallerDep) -> FeedbackRecorded:
    """The true label of an earlier answer, named by its request_id: it counts toward that model's accuracy, and
    retrain learns from it. An answer takes one label: the first one stands. Committed when answered with 200."""
    try:
        recorded = log.add_feedback(body.request_id, body.label, caller.trusted, caller.address)
    except UnknownAnswer:
        raise HTTPException(
            404,
            f"request_id {body.request_id}: no answer has that id; "
            f"send the request_id of one of this service's answers",
        ) from None
    except AlreadyLabelled:
        raise HTTPException(
            409, f"request_id {body.request_id}: that answer has its label already, and the first label stands"
        ) from None
    return FeedbackRecorded(**recorded)


@router.get("/ab", response_model=ABReport)
def ab_report(experiment: ExperimentDep, log: LogDep, settings: SettingsDep) -> ABReport:
    """Per model version: images answered, mean confidence and, from feedback, accuracy; with a candidate, the
    verdict on it (the test is described in docs/serving.md)."""
    return ABReport(**experiment.report(log, settings.ab.alpha, settings.ab.first_look))
