"""The prediction log: write answers and labels, read the tallies, drift windows and labelled answers back.

`PredictionLog(url)` opens (and, the first time, creates) the store at a SQLAlchemy URL:
- `sqlite:///path/serving.db`: a file, in WAL mode (readers never wait for the writer, and a process killed with
  SIGKILL loses no committed row; `synchronous=NORMAL`, so a power cut may lose the last commits, which a
  prediction log can afford). Several processes of one machine may share it: writers take turns (busy timeout).
- `postgresql+psycopg://user:password@host/db`: PostgreSQL (the postgres extra), for replicas on several machines.
- None: an in-memory SQLite database, gone when the process ends (tests, notebooks).

A database that cannot be reached raises `StoreUnavailable` (the service answers 503); a URL that cannot work at
all (a typo, a missing driver, a newer schema) raises a UserError when the log is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import case, create_engine, event, func, insert, inspect, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

from mnist_lightning.errors import UserError
from mnist_lightning.store import schema
from mnist_lightning.store.schema import answers, feedback, store_info

# How far back the drift window looks for the answers of clients under their cap: a client flooding the service
# pushes the others' answers this many windows back at most, after which the window holds fewer answers.
LOOKBACK_WINDOWS = 20
REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # what the service gives (uuid4().hex)
POSTGRES_INSTALL = "pip install 'mnist-lightning[postgres]' (in a checkout: pip install -e '.[postgres]')"


class StoreUnavailable(Exception):
    """The database cannot be reached, or is busy beyond the wait, for now: the service answers 503."""


class UnknownAnswer(LookupError):
    """No answer has that request id."""


class AlreadyLabelled(Exception):
    """That answer has its label already; the first one stands."""


@dataclass(frozen=True)
class Answer:
    """One answered image, as the service logs it. `digit` is the 28x28 input the model saw (values 0..1), None for
    a blank image; `address` and `client_id` identify the caller (None for a token holder, or without an id)."""

    request_id: str
    model_version: str
    role: str
    prediction: int | None
    confidence: float | None
    digit: np.ndarray | None
    statistics: dict[str, float] | None
    address: str | None = None
    client_id: str | None = None
    experiment: str | None = None  # "main/candidate" during an A/B test (serving/ab.Experiment.name)


def shown(url: str | None) -> str:
    """The URL without its password, for messages and logs."""
    if url is None:
        return "in-memory"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def in_memory(url: str | None) -> bool:
    """Whether `url` names an in-memory database (None, sqlite://, sqlite:///:memory:): one per process."""
    if url is None:
        return True
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def make_engine(url: str | None) -> Engine:
    if in_memory(url):  # one connection shared by every thread: PredictionLog serialises its use
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise UserError(
                f"store.url={url!r} is not a database URL: give sqlite:///path/to/serving.db or "
                f"postgresql+psycopg://user:password@host:5432/database"
            ) from None
        # FastAPI answers up to 40 requests at once in its thread pool: as many connections, a wait of at most
        # 10 s for one (then 503)
        options: dict = {"pool_size": 8, "max_overflow": 32, "pool_timeout": 10}
        if parsed.get_backend_name() != "sqlite":  # a server's connection may have dropped; a local file's cannot
            options["pool_pre_ping"] = True
        if parsed.get_backend_name() == "sqlite":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # a writer waits up to 30 s for another process's write to finish before giving up (503)
            options["connect_args"] = {"timeout": 30}
        elif parsed.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": 5}
        try:
            engine = create_engine(parsed, **options)
        except NoSuchModuleError:
            raise UserError(
                f"store.url={shown(url)}: SQLAlchemy knows no database {parsed.drivername!r}; use sqlite:/// or "
                f"postgresql+psycopg://"
            ) from None
        except ImportError as exc:
            hint = POSTGRES_INSTALL if parsed.get_backend_name() == "postgresql" else "install its driver"
            raise UserError(f"store.url={shown(url)} needs the driver {exc.name or exc}: {hint}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", sqlite_pragmas)
    return engine


def sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # ignored (memory) by an in-memory database
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite checks a label's answer only when asked to
    cursor.close()


class PredictionLog:
    """The store at `url` (see the module's docstring); `keep_inputs=False` logs answers without their images."""

    def __init__(self, url: str | None = None, keep_inputs: bool = True, create: bool = True) -> None:
        self.url, self.keep_inputs = url, keep_inputs
        if not create:
            must_exist(url)
        self.engine = make_engine(url)
        # the in-memory database is one connection: its transactions must not interleave across threads
        self._serial = threading.Lock() if in_memory(url) else contextlib.nullcontext()
        try:
            self._key = prepare(self.engine, url, create).encode()
        except StoreUnavailable as exc:
            self.engine.dispose()
            raise UserError(f"store.url={shown(url)}: cannot open the prediction log ({exc})") from None
        except DatabaseError as exc:  # a file that is not a database, a server that refuses the query
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise UserError(f"store.url={shown(url)}: not a prediction log ({reason})") from None

    def __repr__(self) -> str:
        return f"PredictionLog({shown(self.url)})"

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _transaction(self):
        with self._serial, unavailable_as_503(), self.engine.begin() as connection:
            yield connection

    def hashed(self, value: str | None) -> str | None:
        """A client's address or id as the log keeps it: keyed with the store's secret, so the same client has
        the same hash in every process, and the log does not hold addresses."""
        if value is None:
            return None
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:32]

    # -- writing ------------------------------------------------------------------------------------------------

    def record(self, logged: list[Answer]) -> None:
        """Log answers in one transaction: when this returns, they are committed."""
        if not logged:
            return
        now = datetime.now(timezone.utc)
        rows = []
        for item in logged:
            stats = item.statistics or {}
            keep = self.keep_inputs and item.digit is not None
            rows.append(
                {
                    "request_id": item.request_id,
                    "created_at": now,
                    "model_version": item.model_version,
                    "role": item.role,
                    "experiment": item.experiment,
                    "prediction": item.prediction,
                    "confidence": item.confidence,
                    "client_address": self.hashed(item.address),
                    "client_id": self.hashed(item.client_id),
                    "input": as_bytes(item.digit) if keep else None,
                    **{name: stats.get(name) for name in schema.DRIFT_COLUMNS},
                }
            )
        with self._transaction() as connection:
            connection.execute(insert(answers), rows)

    def add_feedback(self, request_id: str, label: int, trusted: bool = False, sender: str | None = None) -> dict:
        """Log the true label of an answer, sent by a token holder (`trusted`) or from the address `sender`;
        raises UnknownAnswer, or AlreadyLabelled when it has one already."""
        if not REQUEST_ID.fullmatch(request_id):  # no answer has such an id, and the column could not hold it
            raise UnknownAnswer(request_id)
        row = {
            "request_id": request_id,
            "label": label,
            "created_at": datetime.now(timezone.utc),
            "trusted": trusted,
            "labelled_by": None if trusted else self.hashed(sender),
        }
        try:
            with self._transaction() as connection:
                # inserted first: the write lock is taken at once, and the constraints decide (one label per answer)
                connection.execute(insert(feedback).values(**row))
                version, prediction = connection.execute(
                    select(answers.c.model_version, answers.c.prediction).where(answers.c.request_id == request_id)
                ).one()
        except IntegrityError:
            with self._transaction() as connection:
                known = connection.execute(select(answers.c.seq).where(answers.c.request_id == request_id)).first()
            raise (UnknownAnswer if known is None else AlreadyLabelled)(request_id) from None
        return {"model_version": version, "prediction": prediction, "label": label, "correct": prediction == label}

    # -- reading ------------------------------------------------------------------------------------------------

    def tallies(self, versions: list[str]) -> dict[str, dict]:
        """Per version: requests (images answered), predictions (non-blank), confidence_sum, feedback, correct."""
        empty = {"requests": 0, "predictions": 0, "confidence_sum": 0.0, "feedback": 0, "correct": 0}
        found = {version: dict(empty) for version in versions}
        right = func.sum(case((answers.c.prediction == feedback.c.label, 1), else_=0))
        with self._transaction() as connection:
            for version, requests, predictions, confidence in connection.execute(
                select(
                    answers.c.model_version,
                    func.count(),
                    func.count(answers.c.prediction),
                    func.sum(answers.c.confidence),
                )
                .where(answers.c.model_version.in_(versions))
                .group_by(answers.c.model_version)
            ):
                found[version].update(requests=requests, predictions=predictions, confidence_sum=confidence or 0.0)
            for version, labelled, correct in connection.execute(
                select(answers.c.model_version, func.count(), right)
                .select_from(feedback.join(answers, feedback.c.request_id == answers.c.request_id))
                .where(answers.c.model_version.in_(versions))
                .group_by(answers.c.model_version)
            ):
                found[version].update(feedback=labelled, correct=int(correct or 0))
        return found

    def outcomes(self, version: str, experiment: str | None = None) -> np.ndarray:
        """Whether each labelled answer of `version` was right (1) or wrong (0), in the order the labels came;
        with `experiment`, only its answers given in that A/B test."""
        right = case((answers.c.prediction == feedback.c.label, 1), else_=0)
        query = (
            select(right)
            .select_from(feedback.join(answers, feedback.c.request_id == answers.c.request_id))
            .where(answers.c.model_version == version)
            .order_by(feedback.c.seq)
        )
        if experiment is not None:
            query = query.where(answers.c.experiment == experiment)
        with self._transaction() as connection:
            rows = connection.execute(query).scalars()
            return np.fromiter(rows, dtype=np.int8)

    def window(self, version: str, size: int, client_share: float = 1.0) -> list[dict[str, float]]:
        """The drift statistics of the last `size` non-blank answers of `version`, oldest first, each row with
        `predicted_class` and `confidence` beside the input statistics.

        One client (its hashed address, and its id alike) fills at most `client_share` of the window: its older
        answers beyond that are left out, and the window reaches further back for others' (at most
        LOOKBACK_WINDOWS windows), so one client cannot set the status. A client that sends more than
        LOOKBACK_WINDOWS windows' worth can push the others out of reach: the window then holds fewer answers and
        the status goes back to collecting (at the default window of 500 and 600 requests a minute, after 17
        minutes of flooding from one address), which is a reason to alert on `collecting` after `ok`."""
        cap = max(1, int(client_share * size))
        lookback = size if cap >= size else size * LOOKBACK_WINDOWS
        columns = [answers.c.client_address, answers.c.client_id, answers.c.prediction, answers.c.confidence]
        columns += [answers.c[name] for name in schema.DRIFT_COLUMNS]
        with self._transaction() as connection:
            rows = connection.execute(
                select(*columns)
                .where(answers.c.model_version == version, answers.c.prediction.is_not(None))
                .order_by(answers.c.seq.desc())
                .limit(lookback)
            ).all()
        kept, per_client = [], {}
        for address, client_id, prediction, confidence, *stats in rows:
            clients = [key for key in (("address", address), ("id", client_id)) if key[1] is not None]
            if any(per_client.get(key, 0) >= cap for key in clients):
                continue
            for key in clients:
                per_client[key] = per_client.get(key, 0) + 1
            row = dict(zip(schema.DRIFT_COLUMNS, stats, strict=True))
            kept.append({**row, "predicted_class": prediction, "confidence": confidence})
            if len(kept) == size:
                break
        return kept[::-1]

    def labelled(self, trusted_only: bool = False) -> list[dict]:
        """Every labelled answer whose input was kept, in the order the labels came: request_id, input (784 bytes),
        label, model_version, prediction, labelled_at, trusted; with `trusted_only`, only labels of token holders."""
        query = (
            select(
                answers.c.request_id,
                answers.c.input,
                feedback.c.label,
                answers.c.model_version,
                answers.c.prediction,
                feedback.c.created_at.label("labelled_at"),
                feedback.c.trusted,
            )
            .select_from(feedback.join(answers, feedback.c.request_id == answers.c.request_id))
            .where(answers.c.input.is_not(None))
            .order_by(feedback.c.seq)
        )
        if trusted_only:
            query = query.where(feedback.c.trusted.is_(True))
        with self._transaction() as connection:
            rows = connection.execute(query)
            return [dict(row._mapping) for row in rows]

    def counts(self) -> dict[str, int]:
        """Rows in the log: answers, labelled answers, labelled answers with their input."""
        with self._transaction() as connection:
            joined = feedback.join(answers, feedback.c.request_id == answers.c.request_id)
            return {
                "answers": connection.execute(select(func.count()).select_from(answers)).scalar_one(),
                "feedback": connection.execute(select(func.count()).select_from(feedback)).scalar_one(),
                "with_inputs": connection.execute(
                    select(func.count()).select_from(joined).where(answers.c.input.is_not(None))
                ).scalar_one(),
            }


def as_bytes(digit: np.ndarray) -> bytes:
    """The 28x28 digit (0..1) as 784 bytes (0..255)."""
    return np.clip(np.rint(np.asarray(digit, dtype=np.float32) * 255), 0, 255).astype(np.uint8).tobytes()


def as_digit(data: bytes) -> np.ndarray:
    """The 784 bytes of a logged input as a 28x28 uint8 image."""
    return np.frombuffer(data, dtype=np.uint8).reshape(28, 28)


@contextlib.contextmanager
def unavailable_as_503():
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)) from exc
    except PoolTimeout:
        raise StoreUnavailable("every connection to it is busy") from None


# -- the schema ---------------------------------------------------------------------------------------------------


def to_version_2(connection) -> None:
    """Version 2: the A/B experiment of each answer, who sent each label (answers and labels of version 1 get
    none: they count in the tallies, and in no experiment's decision)."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import Boolean, Column, String, false

    operations = Operations(MigrationContext.configure(connection))
    operations.add_column("answers", Column("experiment", String(64)))
    operations.create_index("answers_by_experiment", "answers", ["experiment", "model_version"])
    operations.add_column("feedback", Column("trusted", Boolean, nullable=False, server_default=false()))
    operations.add_column("feedback", Column("labelled_by", String(64)))


# UPGRADES[n] brings a store of schema version n to n + 1, in one transaction (alembic's Operations write the DDL
# for SQLite and PostgreSQL alike); a change to schema.py raises SCHEMA_VERSION and adds its step here.
UPGRADES = {1: to_version_2}


def must_exist(url: str | None) -> None:
    """For the readers (retrain, promote): a SQLite file that is not there is a mistyped path, not a new log."""
    parsed = make_url(url) if url else None
    if parsed is None or (parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file()):
        raise UserError(
            f"store.url={shown(url)}: no prediction log there; serve writes one (its store.url, by default "
            f"outputs/serving.db) as it answers"
        )


def prepare(engine: Engine, url: str | None, create: bool = True) -> str:
    """Create the tables in an empty database, check (and upgrade) the schema of an existing one; the client key."""
    with unavailable_as_503():
        if not inspect(engine).has_table(store_info.name):
            if not create:
                raise UserError(f"store.url={shown(url)}: the database holds no prediction log; serve writes one")
            try:
                with engine.begin() as connection:
                    schema.metadata.create_all(connection)
                    connection.execute(
                        insert(store_info),
                        [
                            {"key": "schema_version", "value": str(schema.SCHEMA_VERSION)},
                            {"key": "client_key", "value": secrets.token_hex(32)},
                        ],
                    )
            except (IntegrityError, ProgrammingError, OperationalError):  # another process created it meanwhile
                if not inspect(engine).has_table(store_info.name):
                    raise
        with engine.begin() as connection:
            info = dict(connection.execute(select(store_info.c.key, store_info.c.value)).all())
            version = int(info.get("schema_version", 0))
            if version > schema.SCHEMA_VERSION:
                raise UserError(
                    f"store.url={shown(url)}: the prediction log has schema version {version}, newer than this "
                    f"mnist_lightning reads ({schema.SCHEMA_VERSION}): upgrade mnist_lightning "
                    f"(pip install -U mnist-lightning), or give another store.url"
                )
            for step in range(version, schema.SCHEMA_VERSION):
                if step not in UPGRADES:
                    raise UserError(
                        f"store.url={shown(url)}: the prediction log has schema version {version} and no upgrade "
                        f"from it is known: give a new store.url (an empty database is set up at start)"
                    )
                UPGRADES[step](connection)
                connection.execute(
                    update(store_info).where(store_info.c.key == "schema_version").values(value=str(step + 1))
                )
    return info["client_key"]
