"""The prediction log on real databases: a SQLite file in a temporary folder, and a PostgreSQL server the test
session starts (tests/helpers/postgres.py). Every test runs on both."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import numpy as np
import pytest
from sqlalchemy import create_engine, text, update

from mnist_lightning.errors import UserError
from mnist_lightning.inference import statistics
from mnist_lightning.store import schema
from mnist_lightning.store.log import AlreadyLabelled, Answer, PredictionLog, UnknownAnswer, as_digit


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A URL of an empty database: a new SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/logs/serving.db"  # the folder does not exist yet: the log makes it
    server = request.getfixturevalue("postgres_url")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


def digit(size: int, at: tuple[int, int] = (14, 14)) -> np.ndarray:
    image = np.zeros((28, 28), np.float32)
    y, x = at
    image[y - size // 2 : y - size // 2 + size, x - size // 2 : x - size // 2 + size] = 1.0
    return image


def answer(version: str, prediction: int | None, image: np.ndarray | None = None, **caller) -> Answer:
    image = digit(10) if image is None and prediction is not None else image
    stats = statistics.digit_statistics(image) if prediction is not None else None
    confidence = 0.9 if prediction is not None else None
    return Answer(uuid.uuid4().hex, version, "main", prediction, confidence, image, stats, **caller)


def test_answers_and_labels_are_committed_and_read_back_after_reopening(url):
    log = PredictionLog(url)
    right, wrong, blank = answer("v1", 7), answer("v2", 3), answer("v1", None)
    log.record([right, wrong, blank])
    assert log.add_feedback(right.request_id, 7) == {
        "model_version": "v1",
        "prediction": 7,
        "label": 7,
        "correct": True,
    }
    assert log.add_feedback(wrong.request_id, 5)["correct"] is False
    with pytest.raises(AlreadyLabelled):  # the first label stands
        log.add_feedback(right.request_id, 1)
    with pytest.raises(UnknownAnswer):
        log.add_feedback("f" * 32, 1)
    log.close()

    reopened = PredictionLog(url)  # another process, or a restart, sees what was committed
    tallies = reopened.tallies(["v1", "v2", "v3"])
    assert tallies["v1"] == {"requests": 2, "predictions": 1, "confidence_sum": 0.9, "feedback": 1, "correct": 1}
    assert tallies["v2"]["feedback"] == 1 and tallies["v2"]["correct"] == 0
    assert tallies["v3"]["requests"] == 0
    assert reopened.outcomes("v1").tolist() == [1] and reopened.outcomes("v2").tolist() == [0]
    labelled = reopened.labelled()
    assert [row["label"] for row in labelled] == [7, 5]
    assert np.array_equal(as_digit(labelled[0]["input"]), (digit(10) * 255).astype(np.uint8))
    assert reopened.counts() == {"answers": 3, "feedback": 2, "with_inputs": 2}
    reopened.close()


def test_without_inputs_answers_are_logged_and_nothing_is_left_to_learn_from(url):
    log = PredictionLog(url, keep_inputs=False)
    logged = answer("v1", 4)
    log.record([logged])
    log.add_feedback(logged.request_id, 4)
    assert log.counts() == {"answers": 1, "feedback": 1, "with_inputs": 0} and log.labelled() == []


def test_clients_are_kept_as_keyed_hashes_the_same_in_every_process(url):
    log = PredictionLog(url)
    log.record([answer("v1", 1, address="203.0.113.7", client_id="alice")])
    other = PredictionLog(url)
    assert other.hashed("203.0.113.7") == log.hashed("203.0.113.7") != "203.0.113.7"
    with log.engine.connect() as connection:
        stored = connection.execute(text("SELECT client_address, client_id FROM answers")).one()
    assert stored == (log.hashed("203.0.113.7"), log.hashed("alice"))
    assert "203.0.113.7" not in str(stored)


def test_a_newer_schema_is_refused_in_one_line(url):
    PredictionLog(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            update(schema.store_info).where(schema.store_info.c.key == "schema_version").values(value="99")
        )
    engine.dispose()
    with pytest.raises(UserError, match=r"schema version 99, newer than this mnist_lightning reads \(2\)"):
        PredictionLog(url)


def test_the_drift_window_holds_the_last_answers_with_each_client_under_its_share(url):
    log = PredictionLog(url)
    log.record([answer("v1", 1, digit(8), address="a", client_id=f"id-{i}") for i in range(30)])
    log.record([answer("v1", 2, digit(12), address=f"b{i}") for i in range(10)])
    log.record([answer("v2", 3)] + [answer("v1", None)])  # another model's and a blank answer are not in it
    assert len(log.window("v1", 100)) == 40
    window = log.window("v1", 20, client_share=0.25)
    # address "a" fills at most 5 of 20 however many ids it uses; the window reaches back for the others'
    assert [row["predicted_class"] for row in window] == [1] * 5 + [2] * 10
    assert window[-1]["box_width"] == 12 and window[0]["box_width"] == 8
    latest = log.window("v1", 5)
    assert [row["predicted_class"] for row in latest] == [2] * 5


def test_bad_urls_are_refused_in_one_line_without_the_password(tmp_path):
    with pytest.raises(UserError, match="is not a database URL"):
        PredictionLog("serving.db")
    with pytest.raises(UserError, match="knows no database 'mysqlx'"):
        PredictionLog("mysqlx://user@host/db")
    with pytest.raises(UserError, match=r"cannot open the prediction log") as refused:
        PredictionLog("postgresql+psycopg://mnist:s3cret@127.0.0.1:1/postgres")
    assert "s3cret" not in str(refused.value) and "***" in str(refused.value)


def test_a_process_killed_after_a_commit_loses_nothing(tmp_path):
    """SIGKILL right after record() returns: the rows are in the WAL, and the next process reads them."""
    url = f"sqlite:///{tmp_path}/serving.db"
    script = (
        "import os, signal, sys, uuid\n"
        "from mnist_lightning.store.log import Answer, PredictionLog\n"
        "log = PredictionLog(sys.argv[1])\n"
        "ids = [uuid.uuid4().hex for _ in range(50)]\n"
        "log.record([Answer(i, 'v1', 'main', 1, 0.9, None, None) for i in ids])\n"
        "print(' '.join(ids), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 50
    log = PredictionLog(url)
    for request_id in ids:
        log.add_feedback(request_id, 1)
    assert log.tallies(["v1"])["v1"]["correct"] == 50


def test_the_message_of_an_unreachable_server_names_it(postgres_url):
    port = int(re.search(r":(\d+)/", postgres_url).group(1))
    with pytest.raises(UserError, match=rf"store.url=postgresql\+psycopg://mnist@127.0.0.1:{port + 1}/postgres"):
        PredictionLog(postgres_url.replace(f":{port}/", f":{port + 1}/"))


TABLES = ("answers", "feedback")


def test_a_version_1_log_is_upgraded_when_opened_and_keeps_its_rows(url):
    """A log written before version 2 (made here by taking version 2's additions away again) is brought up to
    date by log.UPGRADES when it is opened: its rows stay, and they belong to no A/B experiment."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import inspect

    old = PredictionLog(url)
    kept = answer("v1", 5)
    old.record([kept])
    old.add_feedback(kept.request_id, 5)
    with old.engine.begin() as connection:
        Operations(MigrationContext.configure(connection)).drop_index("answers_by_experiment", table_name="answers")
        for table, column in (("answers", "experiment"), ("feedback", "trusted"), ("feedback", "labelled_by")):
            connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))  # SQLite 3.35+ and PostgreSQL
        connection.execute(
            update(schema.store_info).where(schema.store_info.c.key == "schema_version").values(value="1")
        )
    old.close()

    upgraded = PredictionLog(url)
    columns = {
        table: {c["name"] for c in inspect(upgraded.engine).get_columns(table)} for table in ("answers", "feedback")
    }
    assert "experiment" in columns["answers"] and {"trusted", "labelled_by"} <= columns["feedback"]
    with upgraded.engine.connect() as connection:
        version = connection.execute(text("SELECT value FROM store_info WHERE key = 'schema_version'")).scalar_one()
    assert version == str(schema.SCHEMA_VERSION) == "2"
    assert upgraded.tallies(["v1"])["v1"] == {
        "requests": 1,
        "predictions": 1,
        "confidence_sum": 0.9,
        "feedback": 1,
        "correct": 1,
    }
    assert upgraded.outcomes("v1").tolist() == [1] and upgraded.outcomes("v1", "v1/v2").tolist() == []
    assert upgraded.labelled()[0]["trusted"] is False
    upgraded.close()


def test_the_decision_reads_one_experiment_and_retrain_can_keep_to_trusted_labels(url):
    log = PredictionLog(url)
    before = answer("v1", 1)  # answered before the A/B test began
    during = [Answer(uuid.uuid4().hex, v, "main", 1, 0.9, digit(9), None, experiment="v1/v2") for v in ("v1", "v2")]
    log.record([before, *during])
    log.add_feedback(before.request_id, 1, trusted=True)
    log.add_feedback(during[0].request_id, 2, sender="198.51.100.4")
    log.add_feedback(during[1].request_id, 1, sender="198.51.100.4")
    assert log.outcomes("v1").tolist() == [1, 0] and log.outcomes("v1", "v1/v2").tolist() == [0]
    assert log.outcomes("v2", "v1/v2").tolist() == [1]
    assert [row["request_id"] for row in log.labelled(trusted_only=True)] == [before.request_id]
    assert len(log.labelled()) == 3
    with log.engine.connect() as connection:
        senders = connection.execute(text("SELECT labelled_by FROM feedback ORDER BY seq")).scalars().all()
    assert senders == [None, log.hashed("198.51.100.4"), log.hashed("198.51.100.4")]
    with pytest.raises(UnknownAnswer):  # not an id the service gives: no query, and no 500 from a long value
        log.add_feedback("x" * 64, 1)


def test_readers_do_not_make_a_log_where_there_is_none(tmp_path):
    with pytest.raises(UserError, match="no prediction log there; serve writes one"):
        PredictionLog(f"sqlite:///{tmp_path}/typo/serving.db", create=False)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "notes.db").write_text("not a database")
    with pytest.raises(UserError, match="not a prediction log"):
        PredictionLog(f"sqlite:///{tmp_path}/notes.db")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_url_is_one_database_shared_by_the_threads(url):
    from concurrent.futures import ThreadPoolExecutor

    log = PredictionLog(url)
    logged = [answer("v1", 3) for _ in range(40)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: log.record([item]), logged))
        list(pool.map(lambda item: log.add_feedback(item.request_id, 3), logged))
    assert log.tallies(["v1"])["v1"]["correct"] == 40


def test_the_drift_columns_are_the_statistics_drift_reads():
    assert schema.DRIFT_COLUMNS == statistics.INPUT_STATISTICS  # the store cannot import inference: kept equal here
