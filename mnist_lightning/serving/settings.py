"""The service's settings as one pydantic model: every default and every allowed range of conf/serve.yaml's
service keys (host, port, workers, limits.*, store.*, auth.*, cors.*, ab.*, monitoring.*, batching.*,
graceful_shutdown_s, root_path, trusted_proxies) lives here. docs/security.md explains what the limits and the
token protect.

`python -m mnist_lightning.serve` validates its config with it before loading a model; `create_app(model)` in a
test or a notebook gets the same defaults. The model-selection keys (ckpt_path, model_ref, device, runtime,
export_dir) are the resolver's and the runtime's, as in every verb, and are checked there.
"""

from __future__ import annotations

import ipaddress
import os
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mnist_lightning.inference.preprocess import MAX_DECODED_BYTES, MAX_PIXELS
from mnist_lightning.store.log import in_memory

MAX_AUTO_WORKERS = 8  # each worker holds its own model and decode budget: workers=auto stops here


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class Group(BaseModel):
    # strict: true or "500" is not silently taken for a number; extra=forbid: a misspelt key is refused, not
    # ignored; frozen: the routes share one instance across threads
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Limits(Group):
    max_body_bytes: int = Field(
        10_000_000, ge=1, description="a larger request body is refused with 413 before it is read"
    )
    max_batch: int = Field(64, ge=1, description="files in one /predict/batch request")
    max_pixels: int = Field(
        MAX_PIXELS, ge=1, description="larger images are refused (decompression bombs), as in predict"
    )
    # Memory: decoding holds pixels x bytes per pixel (1 for greyscale, 4 for colour); everything after it works
    # on an image reduced to 1024 pixels a side. These three bound what decoding can hold at any moment.
    max_image_bytes: int = Field(
        MAX_DECODED_BYTES, ge=1, description="memory decoding one image may take (from its header), else 413"
    )
    max_request_bytes: int = Field(
        80_000_000,
        ge=1,
        description="memory decoding all images of one request may take; a batch's later files "
        "over it get their own 413",
    )
    decode_budget_bytes: int = Field(
        240_000_000, ge=1, description="memory all requests together may hold in decoding; others wait for it"
    )
    decode_wait_s: float = Field(5.0, gt=0, description="a request that waited this long for the budget gets 503")
    requests_per_minute: int = Field(600, ge=0, description="per client address; more get 429; 0: no limit")
    feedback_per_hour: int = Field(300, ge=0, description="labels per client address an hour; 0: no limit")
    # uvicorn's limit_concurrency: connections and requests in flight; more are answered 503 at once
    max_connections: int = Field(256, ge=1, description="open connections; more are answered 503")
    request_timeout_s: float = Field(
        20.0,
        gt=0,
        description="a request's headers and body must have arrived this long after it started, else "
        "408 and the connection is closed (slow clients)",
    )
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")

    @model_validator(mode="after")
    def image_fits_request_fits_budget(self) -> Limits:
        if not self.max_image_bytes <= self.max_request_bytes <= self.decode_budget_bytes:
            raise ValueError(
                f"limits.max_image_bytes={self.max_image_bytes}, limits.max_request_bytes={self.max_request_bytes}, "
                f"limits.decode_budget_bytes={self.decode_budget_bytes}: need image <= request <= budget"
            )
        return self


class Auth(Group):
    # an environment variable keeps it out of config files, the run folder and shell history: conf/serve.yaml
    # reads MNIST_SERVE_TOKEN
    token: str | None = Field(
        None, min_length=16, description="when set, POST /feedback needs `Authorization: Bearer <token>`"
    )
    predict: bool = Field(False, description="the prediction routes need the token too")
    public_details: bool = Field(
        False,
        description="GET /model shows paths, the git commit and the machine to every caller, not only to "
        "callers with the token",
    )

    @model_validator(mode="after")
    def a_token_to_require(self) -> Auth:
        if self.predict and not self.token:
            raise ValueError("auth.predict=true needs a token: set MNIST_SERVE_TOKEN (or auth.token)")
        return self


class Cors(Group):
    origins: list[str] = Field(
        [], description="web origins (https://example.org) whose pages may call the API; [] allows none"
    )

    @field_validator("origins")
    @classmethod
    def origins_are_urls(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"cors.origins: {origin!r} is not an origin such as https://example.org")
        return origins


class Store(Group):
    url: str | None = Field(
        None,
        description="the prediction log's database (SQLAlchemy URL): sqlite:///path/serving.db, or "
        "postgresql+psycopg://user:password@host/db for several replicas; None: in memory, lost at exit",
    )
    keep_inputs: bool = Field(True, description="log the 28x28 input of every answer (what retrain learns from)")


class AB(Group):
    candidate: str | None = Field(
        None, description="a second model, as model_ref takes it or a .ckpt file; None: no A/B test"
    )
    # checked only with a candidate: without one it answers no one and the share is unused
    fraction: float = Field(0.2, description="the share of clients the candidate answers")
    salt: str | None = Field(
        None, description="the secret mixed into the client-id hash; None: one kept per experiment under outputs/"
    )
    # the decision (serving/decision.py): a test at fixed looks, alpha spent over them
    alpha: float = Field(0.05, gt=0, lt=1, description="the error rate of the verdict, over every look together")
    first_look: int = Field(100, ge=10, description="labels per arm at the first look; each later look doubles it")

    @model_validator(mode="after")
    def a_candidate_gets_some_clients(self) -> AB:
        if self.candidate and not 0 < self.fraction < 1:
            raise ValueError(
                f"ab.fraction={self.fraction}: the candidate's share must be between 0 and 1 "
                f"(both excluded: 0 sends it no one, 1 everyone)"
            )
        return self


class Monitoring(Group):
    window: int = Field(500, ge=1, description="the last requests the statistics are computed over")
    warn: float = Field(0.1, description="a PSI from this on is a warning")
    alert: float = Field(0.25, description="a PSI from this on is an alert")
    # By chance alone the PSI of 10 bins over n samples is about 9/n (0.18 at 50, 0.045 at 200): a status from
    # fewer samples would warn about noise.
    min_samples: int = Field(200, ge=1, description="observations a model needs before it gets a drift status")
    # None: no cap when the service answers this machine only (host 127.0.0.1), a tenth when it answers others
    max_client_share: float | None = Field(
        None, gt=0, le=1, description="the largest share of a window's observations one client may fill"
    )

    @model_validator(mode="after")
    def warn_before_alert(self) -> Monitoring:
        if not 0 < self.warn <= self.alert:
            raise ValueError(
                f"monitoring.warn={self.warn}, monitoring.alert={self.alert}: need 0 < warn <= alert "
                f"(the usual PSI thresholds are 0.1 and 0.25)"
            )
        return self

    @property
    def samples_needed(self) -> int:
        """Observations before a status: min_samples, or a full window when the window is smaller."""
        return min(self.min_samples, self.window)


class Batching(Group):
    # serving/batching.py: requests in flight together share one forward pass and one commit of the log
    max_batch: int = Field(
        16, ge=1, le=1024, description="images of concurrent /predict requests answered together; 1: each alone"
    )
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="how long a batch smaller than max_batch waits for more requests; 0: none"
    )


class ServeSettings(Group):
    host: str = Field("127.0.0.1", description="127.0.0.1: this machine only; 0.0.0.0: every network interface")
    port: int = Field(8000, ge=1, le=65535)
    # "auto" becomes a number when the settings are read (auto_workers): the field always holds one afterwards
    workers: int = Field(1, ge=1, le=64, description="server processes answering on the port; auto: one per core")
    limits: Limits = Limits()
    store: Store = Store()
    ab: AB = AB()
    monitoring: Monitoring = Monitoring()
    batching: Batching = Batching()
    graceful_shutdown_s: int = Field(10, ge=0, description="seconds in-flight requests get after Ctrl-C or SIGTERM")
    root_path: str = Field("", description="the path prefix a reverse proxy serves the app under, e.g. /mnist")
    auth: Auth = Auth()
    cors: Cors = Cors()
    trusted_proxies: list[str] = Field(
        [], description="addresses of reverse proxies whose X-Forwarded-For names the client; [] trusts none"
    )

    @model_validator(mode="before")
    @classmethod
    def auto_workers(cls, data):
        """workers=auto: one process per usable core, at most MAX_AUTO_WORKERS; one when the prediction log is in
        memory (each worker would keep its own)."""
        if isinstance(data, dict) and data.get("workers") == "auto":
            store = data.get("store")
            url = store.get("url") if isinstance(store, dict) else getattr(store, "url", None)
            data = {**data, "workers": 1 if in_memory(url) else min(usable_cores(), MAX_AUTO_WORKERS)}
        return data

    @model_validator(mode="after")
    def workers_share_a_log(self) -> ServeSettings:
        if self.workers > 1 and in_memory(self.store.url):
            raise ValueError(
                f"workers={self.workers} needs a prediction log they share: store.url=sqlite:///path/serving.db "
                f"or postgresql+psycopg://... (in memory, each worker would keep its own)"
            )
        return self

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the service (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to any interface
            return False

    @property
    def answers_others(self) -> bool:
        """Whether clients of other machines reach it: a host other than loopback, or a proxy in front."""
        return not self.loopback or bool(self.trusted_proxies)

    @property
    def client_share(self) -> float:
        """monitoring.max_client_share, or its default: no cap when only this machine's programs call the service."""
        share = self.monitoring.max_client_share
        return share if share is not None else 0.1 if self.answers_others else 1.0
