"""What the routes share, as FastAPI dependencies: `create_app` puts it on `app.state` once, and a route declares
the pieces it reads (`experiment: ExperimentDep`), so its signature says what it depends on and a test can
override any of them (`app.dependency_overrides`). The getters are `async`: a dependency this small is not worth
a turn in the thread pool, where FastAPI runs plain `def` dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.serving.ab import Experiment
from mnist_lightning.serving.limits import ClientLimits, DecodeBudget
from mnist_lightning.serving.metrics import ServiceMetrics
from mnist_lightning.serving.settings import ServeSettings
from mnist_lightning.store.log import PredictionLog


async def settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def models(request: Request) -> dict[str, LoadedModel]:
    """Every served model by version, the main one first."""
    return request.app.state.models


async def main_model(request: Request) -> LoadedModel:
    return request.app.state.models[request.app.state.experiment.main]


async def experiment(request: Request) -> Experiment:
    return request.app.state.experiment


async def prediction_log(request: Request) -> PredictionLog:
    """The prediction log (store/): answers, labels, and what /ab and /monitoring compute from them."""
    return request.app.state.log


async def metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def decode_budget(request: Request) -> DecodeBudget:
    return request.app.state.decode_budget


async def client_limits(request: Request) -> ClientLimits:
    return request.app.state.client_limits


SettingsDep = Annotated[ServeSettings, Depends(settings)]
ModelsDep = Annotated[dict[str, LoadedModel], Depends(models)]
MainModelDep = Annotated[LoadedModel, Depends(main_model)]
ExperimentDep = Annotated[Experiment, Depends(experiment)]
LogDep = Annotated[PredictionLog, Depends(prediction_log)]
MetricsDep = Annotated[ServiceMetrics, Depends(metrics)]
DecodeBudgetDep = Annotated[DecodeBudget, Depends(decode_budget)]
ClientLimitsDep = Annotated[ClientLimits, Depends(client_limits)]
