"""The A/B test: POST /feedback pairs an earlier answer with its true label, GET /ab compares the models.

Two routers: `feedback` changes the tallies (create_app puts it behind the token when one is set), `router` only
reads them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from mnist_lightning.serving.ab import FEEDBACK_MEMORY
from mnist_lightning.serving.access import feedback_allowed, same_origin, within_rate
from mnist_lightning.serving.schemas import ABReport, Feedback, FeedbackRecorded, error_responses
from mnist_lightning.serving.state import ExperimentDep

feedback_router = APIRouter(
    tags=["ab"],
    dependencies=[Depends(same_origin), Depends(within_rate), Depends(feedback_allowed)],
    responses=error_responses(400, 403, 404, 413, 422, 429),
)
router = APIRouter(tags=["ab"])


@feedback_router.post("/feedback", response_model=FeedbackRecorded)
def feedback(body: Feedback, experiment: ExperimentDep) -> FeedbackRecorded:
    """The true label of an earlier answer, named by its request_id: it counts toward that model's accuracy."""
    recorded = experiment.feedback(body.request_id, body.label)
    if recorded is None:
        raise HTTPException(
            404,
            f"request_id {body.request_id}: no answer with that id is awaiting feedback "
            f"(unknown, already given feedback, or forgotten after {FEEDBACK_MEMORY:,} newer answers)",
        )
    return FeedbackRecorded(**recorded)


@router.get("/ab", response_model=ABReport)
def ab_report(experiment: ExperimentDep) -> ABReport:
    """Per model version: images answered, mean confidence and, from feedback, accuracy."""
    return ABReport(**experiment.report())
