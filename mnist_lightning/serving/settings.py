"""The service's settings as one pydantic model: every default and every allowed range of conf/serve.yaml's
service keys (host, port, limits.*, ab.*, monitoring.*, graceful_shutdown_s, root_path) lives here.

`python -m mnist_lightning.serve` validates its config with it before loading a model; `create_app(model)` in a
test or a notebook gets the same defaults. The model-selection keys (ckpt_path, model_ref, device, runtime,
export_dir) are the resolver's and the runtime's, as in every verb, and are checked there.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mnist_lightning.inference.preprocess import MAX_PIXELS


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


class AB(Group):
    candidate: str | None = Field(
        None, description="a second model, as model_ref takes it or a .ckpt file; None: no A/B test"
    )
    # checked only with a candidate: without one it answers no one and the share is unused
    fraction: float = Field(0.2, description="the share of clients the candidate answers")

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


class ServeSettings(Group):
    host: str = Field("127.0.0.1", description="127.0.0.1: this machine only; 0.0.0.0: every network interface")
    port: int = Field(8000, ge=1, le=65535)
    limits: Limits = Limits()
    ab: AB = AB()
    monitoring: Monitoring = Monitoring()
    graceful_shutdown_s: int = Field(10, ge=0, description="seconds in-flight requests get after Ctrl-C or SIGTERM")
    root_path: str = Field("", description="the path prefix a reverse proxy serves the app under, e.g. /mnist")
