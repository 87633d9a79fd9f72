"""What the service counts, in Prometheus' text format at /metrics (prometheus-client, one registry per app).

With several worker processes (serve workers=N), PROMETHEUS_MULTIPROC_DIR is set: each process writes its values
to files there, and /metrics adds up every process's (prometheus-client's multiprocess mode; gauges keep the most
recent value written by any of them)."""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# serving/drift.py's statuses and serving/decision.py's verdicts
DRIFT_STATUSES = ("ok", "warn", "alert", "collecting", "no reference")
VERDICTS = ("undecided", "candidate better", "candidate worse")
# latency buckets from 1 ms to 10 s: one image takes a few ms, a batch of 64 large images much longer
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's Prometheus metrics. Per model version: answers, their latency, predictions per class, the
    drift PSIs; the `mnist_model_info` gauge names each served version and its role (main or candidate)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mnist_http_requests", "HTTP requests by route and status code", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mnist_http_request_duration_seconds",
            "Time from request to response, by route",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.answers = Counter(
            "mnist_model_answers", "Images answered, by model version", ["model_version"], registry=self.registry
        )
        self.model_latency = Histogram(
            "mnist_model_duration_seconds",
            "Time to classify the images of one forward pass, by model version",
            ["model_version"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.forward_images = Histogram(
            "mnist_forward_pass_images",
            "Images per forward pass: a /predict/batch request's, or the /predict requests micro-batched together",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.predictions = Counter(
            "mnist_predictions",
            "Digits predicted, by predicted class and model version",
            ["digit", "model_version"],
            registry=self.registry,
        )
        self.model = Gauge(
            "mnist_model_info",
            "A model being served (value 1), by version, network and role",
            ["model_version", "network", "role"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.drift = Gauge(
            "mnist_drift_psi",
            "Population Stability Index of the last requests against the model's reference, by statistic",
            ["model_version", "statistic"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        # one series per state, 1 for the current one (the usual Prometheus encoding of a state): alert rules
        # (monitoring/alerts.yml) match a state, so the thresholds stay in the service's settings
        self.drift_status = Gauge(
            "mnist_drift_status",
            "The drift status of each model version (1 for its current status, 0 for the others)",
            ["model_version", "status"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.ab_verdict = Gauge(
            "mnist_ab_verdict",
            "The A/B decision on the candidate (1 for the current verdict, 0 for the others)",
            ["main", "candidate", "verdict"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

        self.store_available = Gauge(
            "mnist_store_available",
            "Whether the prediction log could be reached at the last scrape (1) or not (0)",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def serving(self, model_version: str, network: str, role: str) -> None:
        self.model.labels(model_version=model_version, network=network, role=role).set(1)

    def observe_answers(self, model_version: str, predictions: list[int | None], seconds: float) -> None:
        self.answers.labels(model_version=model_version).inc(len(predictions))
        self.model_latency.labels(model_version=model_version).observe(seconds)
        self.forward_images.observe(len(predictions))
        for digit in predictions:
            if digit is not None:
                self.predictions.labels(digit=str(digit), model_version=model_version).inc()

    def observe_drift(self, model_version: str, psi: dict[str, float], status: str) -> None:
        for statistic, value in psi.items():
            self.drift.labels(model_version=model_version, statistic=statistic).set(value)
        for state in DRIFT_STATUSES:
            self.drift_status.labels(model_version=model_version, status=state).set(int(state == status))

    def observe_verdict(self, main: str, candidate: str, verdict: str) -> None:
        for state in VERDICTS:
            self.ab_verdict.labels(main=main, candidate=candidate, verdict=state).set(int(state == verdict))

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # every worker's values, added up
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts every HTTP request by route template and status, and times it.

    It wraps everything else, so requests refused early (a body over the size limit) are counted too.
    Unknown paths are counted under one route label, `unmatched`, so scanners cannot grow the label set.
    """

    def __init__(self, app, metrics: ServiceMetrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None)  # the template, e.g. /predict/batch
            if route is None:  # refused before routing (a body over the limit): its path, if it is a route
                route = scope["path"] if scope["path"] in self.routes else "unmatched"
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
