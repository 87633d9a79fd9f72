"""The FastAPI application: `create_app(model, settings, candidate)` builds it around loaded models.

The routes live in one module per theme (routes_predict, routes_ab, routes_service) and reach what they share
through the dependencies of state.py; this module only assembles them.
"""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from mnist_lightning.errors import UserError
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.serving import routes_ab, routes_predict, routes_service
from mnist_lightning.serving.ab import Experiment
from mnist_lightning.serving.access import require_token, within_rate
from mnist_lightning.serving.batching import MicroBatcher
from mnist_lightning.serving.limits import BodySizeLimit, ClientLimits, DecodeBudget
from mnist_lightning.serving.metrics import RequestMetrics, ServiceMetrics
from mnist_lightning.serving.schemas import error_responses
from mnist_lightning.serving.settings import ServeSettings
from mnist_lightning.serving.validation import readable_validation_error
from mnist_lightning.store.log import PredictionLog, StoreUnavailable

log = logging.getLogger(__name__)
ROUTERS = (routes_predict.router, routes_ab.feedback_router, routes_ab.router, routes_service.router)


def create_app(
    model: LoadedModel,
    settings: ServeSettings | None = None,
    candidate: LoadedModel | None = None,
    log: PredictionLog | None = None,
) -> FastAPI:
    """The service answering with `model`, and with `candidate` for a share of the clients (settings.ab); its
    answers and labels go to `log`, by default the one at settings.store.url (in memory when that is None)."""
    settings = settings or ServeSettings()
    if candidate is not None and not 0 < settings.ab.fraction < 1:  # the settings check it only with ab.candidate
        raise UserError(f"ab.fraction={settings.ab.fraction}: the candidate's share must be between 0 and 1")
    app = FastAPI(
        title="mnist_lightning",
        summary="Handwritten digits in, the digit and the probability of each class out.",
        description="Upload an image of one digit (any format Pillow reads) to /predict, or several to "
        "/predict/batch. The drawing page is at /.",
    )
    models = {served.version: served for served in (model, candidate) if served is not None}
    experiment = Experiment(
        model.version, candidate.version if candidate is not None else None, settings.ab.fraction, salt=settings.ab.salt
    )
    metrics = ServiceMetrics()
    for version, served in models.items():
        metrics.serving(version, served.net.get("arch", "unknown"), experiment.role(version))
    # Set here rather than in a lifespan: the app answers without a startup phase (a TestClient used without
    # `with`, as the notebooks do), and there is nothing to release at shutdown.
    app.state.settings = settings
    app.state.models = models
    app.state.experiment = experiment
    app.state.log = log if log is not None else PredictionLog(settings.store.url, settings.store.keep_inputs)
    app.state.metrics = metrics
    app.state.decode_budget = DecodeBudget(settings.limits.decode_budget_bytes, settings.limits.decode_wait_s)
    answers = routes_predict.Answers(models, experiment, app.state.log, metrics)
    app.state.predictor = routes_predict.Predictor(answers, settings.limits, app.state.decode_budget)
    if settings.batching.max_batch > 1:
        app.state.predictor.batcher = MicroBatcher(
            app.state.predictor.process, settings.batching.max_batch, settings.batching.max_wait_ms / 1000
        )
    app.state.client_limits = ClientLimits(settings.limits.requests_per_minute, settings.limits.feedback_per_hour)
    # with a token, the routes that change the service's state need it (the prediction routes with auth.predict);
    # declared only then, so the OpenAPI schema says exactly what a client must send
    # (the rate is counted before the token is checked: guessing tokens is rate-limited like everything else)
    guarded = {"dependencies": [Depends(within_rate), Depends(require_token)], "responses": error_responses(401)}
    token = settings.auth.token is not None
    app.include_router(routes_predict.router, **(guarded if token and settings.auth.predict else {}))
    app.include_router(routes_ab.feedback_router, **(guarded if token else {}))
    app.include_router(routes_ab.router)
    app.include_router(routes_service.router)
    app.mount("/static", StaticFiles(directory=str(routes_service.PAGE)), name="static")
    app.add_exception_handler(RequestValidationError, readable_validation_error)
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    if settings.cors.origins:  # off by default: no other origin's page may read the answers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Client-Id"],
        )
    # added last, so outermost: it counts every request, those the size limit refuses before routing too (under
    # their path when it is one of the routers'; app.routes may hold the routers rather than their routes)
    paths = {route.path for router in ROUTERS for route in router.routes}
    app.add_middleware(RequestMetrics, metrics=metrics, routes=paths)
    return app


async def store_unavailable(request, exc: StoreUnavailable) -> JSONResponse:
    """503 when the prediction log cannot be reached: an answer is only given once it is logged. The reason
    (the database's own words, which may name its host) goes to the server's log, not to the client."""
    log.warning("%s %s: the prediction log cannot be reached: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the prediction log cannot be reached: nothing was recorded, try again shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )
