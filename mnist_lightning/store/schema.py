"""The prediction log's tables, and its schema version.

`store_info` holds the schema version and the secret key that client addresses and ids are hashed with (shared by
every process that opens the store, so a client has the same hash in every worker and replica). `answers` holds one
row per answered image, `feedback` one row per label, referencing its answer; an answer has at most one label (the
primary key), so a second label for the same answer is refused rather than counted twice.

The version is raised whenever a table changes, and `log.UPGRADES` gets the step that brings a store of the version
before up to it (docs/serving.md, "The prediction log"). Version 2 added the A/B experiment an answer belongs to
(the A/B decision compares only answers of the same experiment) and who sent each label (retrain can keep to the
labels of token holders). A store of a newer version than this code knows is
refused: its tables may mean something this code would misread.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    false,
)

SCHEMA_VERSION = 2  # 2: answers.experiment; feedback.trusted and feedback.labelled_by
INPUT_SIZE = 28 * 28  # the prepared digit the model saw, one byte a pixel (0 = background, 255 = full ink)
DRIFT_COLUMNS = ("mean_ink", "ink_fraction", "box_width", "box_height", "centre_offset")  # inference.statistics'

# SQLite gives an INTEGER PRIMARY KEY its rowid (autoincrementing); BIGINT there would not be
Sequence = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

store_info = Table(
    "store_info",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", String(200), nullable=False),
)

answers = Table(
    "answers",
    metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True, comment="the order answers were logged in"),
    Column("request_id", String(32), nullable=False, unique=True, comment="what POST /feedback refers to"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("model_version", String(64), nullable=False, comment="a prefix of the checkpoint's sha256"),
    Column("role", String(16), nullable=False, comment="main or candidate"),
    Column("experiment", String(64), comment="main/candidate versions of the A/B test it was answered in; null: none"),
    Column("prediction", SmallInteger, comment="null for a blank image"),
    Column("confidence", Float),
    Column("client_address", String(64), comment="HMAC of the caller's address; null for a token holder"),
    Column("client_id", String(64), comment="HMAC of its X-Client-Id header; null without one"),
    Column("input", LargeBinary, comment="the 28x28 digit as the model saw it; null with store.keep_inputs=false"),
    *(Column(name, Float, comment="drift statistic; null for a blank image") for name in DRIFT_COLUMNS),
    Index("answers_by_model", "model_version", "seq"),
    Index("answers_by_experiment", "experiment", "model_version"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True, comment="the order labels arrived in"),
    Column("request_id", String(32), ForeignKey("answers.request_id"), nullable=False, unique=True),
    Column("label", SmallInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("trusted", Boolean, nullable=False, server_default=false(), comment="sent with the service's token"),
    Column("labelled_by", String(64), comment="HMAC of the sender's address; null for a token holder"),
)
