"""A/B serving: which model answers a request, and how each model fares.

A request with an `X-Client-Id` header is assigned by a keyed hash of that id (HMAC-SHA256 with the experiment's
secret salt), so a client keeps its model across requests and, with the salt kept, restarts, while no one outside
can compute which ids land on which model; a request without one is assigned at random. Every answer carries a
request id that `POST /feedback` can later pair with the true label, which gives each model an accuracy.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

FEEDBACK_MEMORY = 100_000  # answers remembered for feedback; older ones are forgotten first


def hashed_share(client_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by the client id and the salt: stable across processes and restarts (unlike
    hash()), and unknown to anyone without the salt."""
    digest = hmac.new(salt.encode(), client_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Experiment:
    """Routes requests between a main model and an optional candidate, and keeps per-version tallies.

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
        self._answers: OrderedDict[str, tuple[str, int | None]] = OrderedDict()
        self._tally = {
            v: {"requests": 0, "predictions": 0, "confidence_sum": 0.0, "feedback": 0, "correct": 0}
            for v in (main_version, candidate_version)
            if v
        }

    def role(self, version: str) -> str:
        return "main" if version == self.main else "candidate"

    def choose(self, client_id: str | None) -> str:
        """The version that answers this request."""
        if not self.candidate:
            return self.main
        with self._lock:
            share = hashed_share(client_id, self.salt) if client_id else self._random.random()
        return self.candidate if share < self.fraction else self.main

    def record(self, version: str, prediction: int | None, confidence: float | None) -> str:
        """Count one answer of `version`; returns the request id that feedback refers to."""
        request_id = uuid.uuid4().hex
        with self._lock:
            tally = self._tally[version]
            tally["requests"] += 1
            if prediction is not None:
                tally["predictions"] += 1
                tally["confidence_sum"] += float(confidence)
            self._answers[request_id] = (version, prediction)
            while len(self._answers) > FEEDBACK_MEMORY:
                self._answers.popitem(last=False)
        return request_id

    def feedback(self, request_id: str, label: int) -> dict | None:
        """The true label of an answered request; None for an unknown (or forgotten) id. Each id counts once."""
        with self._lock:
            answer = self._answers.pop(request_id, None)
            if answer is None:
                return None
            version, prediction = answer
            correct = prediction == label
            self._tally[version]["feedback"] += 1
            self._tally[version]["correct"] += int(correct)
        return {"model_version": version, "prediction": prediction, "label": label, "correct": correct}

    def report(self) -> dict:
        with self._lock:
            tallies = {v: dict(t) for v, t in self._tally.items()}
        versions = {}
        for version, t in tallies.items():
            versions[version] = {
                "role": self.role(version),
                "requests": t["requests"],
                "mean_confidence": round(t["confidence_sum"] / t["predictions"], 6) if t["predictions"] else None,
                "feedback": t["feedback"],
                "accuracy": round(t["correct"] / t["feedback"], 6) if t["feedback"] else None,
            }
        return {"fraction": self.fraction, "main": self.main, "candidate": self.candidate, "versions": versions}


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
