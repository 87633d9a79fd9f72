"""The pieces of drift monitoring and A/B routing on their own: digit statistics, PSI, the drift report, routing."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest

from mnist_lightning.inference import statistics
from mnist_lightning.serving.ab import Experiment, hashed_share
from mnist_lightning.serving.drift import drift_report
from mnist_lightning.serving.settings import Monitoring
from mnist_lightning.store.log import Answer, PredictionLog


def square(size: int, at: tuple[int, int] = (14, 14)) -> np.ndarray:
    digit = np.zeros((28, 28), np.float32)
    y, x = at
    digit[y - size // 2 : y - size // 2 + size, x - size // 2 : x - size // 2 + size] = 1.0
    return digit


def test_digit_statistics_measure_ink_box_and_centre():
    row = statistics.digit_statistics(square(6))
    assert row["box_width"] == row["box_height"] == 6
    assert row["ink_fraction"] == pytest.approx(36 / 784) and row["mean_ink"] == pytest.approx(36 / 784)
    assert row["centre_offset"] == pytest.approx(0.5 * 2**0.5)  # a 6x6 square's centre of mass is at (13.5, 13.5)
    assert statistics.digit_statistics(square(4, at=(6, 14)))["centre_offset"] == pytest.approx(np.hypot(8.5, 0.5))
    assert set(statistics.digit_statistics(np.zeros((28, 28), np.float32)).values()) == {0.0}  # blank: no crash


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shifted_one():
    rng = np.random.default_rng(0)
    reference = statistics.reference_bins(rng.normal(0, 1, 5000))
    assert len(reference["edges"]) == statistics.BINS - 1 and sum(reference["shares"]) == pytest.approx(1)
    assert statistics.psi(reference, rng.normal(0, 1, 500)) < 0.1
    assert statistics.psi(reference, rng.normal(1, 1, 500)) > 0.25
    classes = statistics.class_shares(rng.integers(0, 10, 5000))
    assert statistics.psi(classes, rng.integers(0, 10, 500)) < 0.1
    assert statistics.psi(classes, np.ones(500, int)) > 0.25  # only ones
    assert np.isfinite(statistics.psi(classes, np.ones(500, int)))  # empty bins are clipped, not infinite


def test_the_drift_report_collects_then_compares_the_window_with_the_reference():
    rng = np.random.default_rng(1)
    digits = [square(int(s)) for s in rng.integers(8, 16, 2000)]
    predicted, confidence = rng.integers(0, 10, 2000), rng.uniform(0.9, 1.0, 2000)
    reference = statistics.reference(digits, predicted, confidence)
    assert set(reference) == {*statistics.INPUT_STATISTICS, *statistics.OUTPUT_STATISTICS}
    log = PredictionLog()  # in memory; tests/test_store.py runs the log on SQLite and PostgreSQL

    def send(images, classes, confidences):
        log.record(
            [
                Answer(uuid.uuid4().hex, "v1", "main", int(c), float(p), image, statistics.digit_statistics(image))
                for image, c, p in zip(images, classes, confidences, strict=False)
            ]
        )

    settings = Monitoring(window=300, warn=0.1, alert=0.25)
    assert drift_report(None, log, "v1", settings)["status"] == "no reference"
    send(digits[: settings.min_samples - 1], predicted, confidence)
    assert drift_report(reference, log, "v1", settings)["status"] == "collecting"
    send(digits[1000:1300], predicted[1000:], confidence[1000:])
    same = drift_report(reference, log, "v1", settings)
    assert same["samples"] == 300 and same["status"] == "ok", same["psi"]
    send([square(4, at=(5, 5))] * 300, [1] * 300, [0.6] * 300)  # small digits in a corner: the window holds only these
    drifted = drift_report(reference, log, "v1", settings)
    assert drifted["status"] == "alert" and drifted["psi"]["centre_offset"] >= 0.25


def test_routing_is_sticky_by_client_id_and_random_without_one():
    experiment = Experiment("main", "candidate", fraction=0.3, seed=0)
    ids = [f"user-{i}" for i in range(2000)]
    chosen = [experiment.choose(i) for i in ids]
    assert chosen == [experiment.choose(i) for i in ids]
    restarted = Experiment("main", "candidate", fraction=0.3, salt=experiment.salt)  # the salt kept: the same
    assert chosen == [restarted.choose(i) for i in ids]
    assert [c == "candidate" for c in chosen] == [hashed_share(i, experiment.salt) < 0.3 for i in ids]
    # without the salt no one can tell which ids land on the candidate: another salt picks other clients
    other = Experiment("main", "candidate", fraction=0.3, seed=0)
    assert other.salt != experiment.salt
    both = sum(a == b == "candidate" for a, b in zip(chosen, map(other.choose, ids), strict=True))
    assert 0.05 < both / 2000 < 0.13  # independent: about 0.3 x 0.3 of the clients
    assert 0.25 < chosen.count("candidate") / 2000 < 0.35
    anonymous = [experiment.choose(None) for _ in range(2000)]
    assert 0.25 < anonymous.count("candidate") / 2000 < 0.35
    assert {Experiment("main").choose(i) for i in ids} == {"main"}  # no candidate: all to the main model


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"warn": 0.3, "alert": 0.2}, "monitoring.warn=0.3, monitoring.alert=0.2: need 0 < warn <= alert"),
        ({"window": "abc"}, "monitoring.window=abc: must be a whole number"),
        ({"min_samples": 0}, "monitoring.min_samples=0: must be at least 1"),
        ({"fraction": 1.5}, "ab.fraction=1.5: the candidate's share must be between 0 and 1"),
    ],
)
def test_serve_refuses_bad_monitoring_and_ab_settings_before_loading_a_model(settings, message, free_port_number):
    from omegaconf import OmegaConf

    from mnist_lightning.errors import UserError
    from mnist_lightning.serve import serve

    monitoring = {"window": 500, "warn": 0.1, "alert": 0.25, "min_samples": 200}
    monitoring.update({k: v for k, v in settings.items() if k != "fraction"})
    cfg = OmegaConf.create(
        {
            "host": "127.0.0.1",
            "port": free_port_number,
            "ckpt_path": "/nonexistent/model.ckpt",  # never reached: the settings are checked first
            "ab": {"candidate": "latest", "fraction": settings.get("fraction", 0.2)},
            "monitoring": monitoring,
        }
    )
    with pytest.raises(UserError, match=re.escape(message)):
        serve(cfg)


@pytest.fixture
def free_port_number() -> int:
    from helpers import free_port

    return free_port()
