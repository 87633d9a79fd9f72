"""A/B serving: which model answers a request, and how each model fares.

A request with an `X-Client-Id` header is assigned by a keyed hash of that id (HMAC-SHA256 with the experiment's
secret salt), so a client keeps its model across requests and, with the salt kept, restarts, while no one outside
can compute which ids land on which model; a request without one is assigned at random. Every answer is logged
(store/) with a request id that `POST /feedback` can later pair with the true label, which gives each model an
accuracy, and the candidate a verdict.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
import threading
from pathlib import Path

from mnist_lightning.serving.decision import decide
from mnist_lightning.store.log import PredictionLog


def hashed_share(client_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by the client id and the salt: stable across processes and restarts (unlike
    hash()), and unknown to anyone without the salt."""
    digest = hmac.new(salt.encode(), client_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Experiment:
    """Routes requests between a main model and an optional candidate; `report` compares them from the log.

    `fraction` is taken as given: the service's settings (serving/settings.py) check it. `salt` keys the client-id
    hash; without one the experiment makes its own (clients then change model when the process restarts)."""

    def __init__(
        self,
        main_version: str,
        candidate_version: str | None = None,
        fraction: float = 0.0,
        seed: int | None = None,
        salt: str | None = None,
    ) -> None:
        self.main, self.candidate = main_version, candidate_version
        self.salt = salt or secrets.token_hex(16)
        self.fraction = fraction if candidate_version else 0.0
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def name(self) -> str | None:
        """What the log files this A/B test's answers under: "main/candidate" (the same across restarts, workers
        and replicas); None without a candidate."""
        return experiment_name(self.main, self.candidate) if self.candidate else None

    @property
    def versions(self) -> list[str]:
        return [version for version in (self.main, self.candidate) if version]

    def role(self, version: str) -> str:
        return "main" if version == self.main else "candidate"

    def choose(self, client_id: str | None) -> str:
        """The version that answers this request."""
        if not self.candidate:
            return self.main
        with self._lock:
            share = hashed_share(client_id, self.salt) if client_id else self._random.random()
        return self.candidate if share < self.fraction else self.main

    def report(self, log: PredictionLog, alpha: float = 0.05, first_look: int = 100) -> dict:
        """Per version: images answered, mean confidence, labels and accuracy (over everything the log holds);
        with a candidate, the decision (serving/decision.py) on this experiment's labels. Counted from the
        prediction log: every worker and replica gives the same."""
        tallies = log.tallies(self.versions)
        versions = {}
        for version, t in tallies.items():
            versions[version] = {
                "role": self.role(version),
                "requests": t["requests"],
                "mean_confidence": round(t["confidence_sum"] / t["predictions"], 6) if t["predictions"] else None,
                "feedback": t["feedback"],
                "accuracy": round(t["correct"] / t["feedback"], 6) if t["feedback"] else None,
            }
        return {
            "fraction": self.fraction,
            "main": self.main,
            "candidate": self.candidate,
            "versions": versions,
            "decision": self.decision(log, alpha, first_look),
        }

    def decision(self, log: PredictionLog, alpha: float = 0.05, first_look: int = 100) -> dict | None:
        """The decision on the candidate (serving/decision.py), None without one. On this experiment's answers
        only: both arms from the same time and traffic."""
        if not self.candidate:
            return None
        outcomes = [log.outcomes(version, self.name) for version in (self.main, self.candidate)]
        return decide(*outcomes, alpha, first_look)


def experiment_name(main_version: str, candidate_version: str) -> str:
    return f"{main_version}/{candidate_version}"


def kept_salt(folder: Path, main_version: str, candidate_version: str) -> str:
    """The salt of the experiment `main_version` vs `candidate_version`, made once and kept in `folder` (readable by
    its owner only), so that every client keeps its model when the service restarts."""
    path = folder / f"ab-salt-{main_version}-{candidate_version}"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(16))
        os.replace(path.with_suffix(".tmp"), path)
    return path.read_text().strip()
