"""What one logged answer costs the prediction log: a committed transaction per answer, as `serve` writes it.

    python -m benchmarks.store [--answers 500] [--postgres URL]

On a SQLite file (WAL, the default store) and on PostgreSQL (the URL given, else a server started in a temp
folder as the tests start one, but with fsync on, as in production): the median and p99 time of
`PredictionLog.record` for one answer, one writer at a time, and the answers per second that 8 threads writing
at once commit. These are the figures that size a shared store for N replicas (docs/scale.md). Prints one JSON
object; figures belong with their machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.harness import ROOT, describe_machine, log, median, percentile, title


def answer():
    from mnist_lightning.store.log import Answer

    digit = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    statistics = {"ink": 0.2, "center_x": 14.0, "center_y": 14.0, "spread": 5.0, "confidence": 0.99}
    return Answer(uuid.uuid4().hex, "abc123", "main", 7, 0.99, digit, statistics, address="127.0.0.1")


def measure(url: str, answers: int) -> dict:
    from mnist_lightning.store.log import PredictionLog

    store = PredictionLog(url)
    single = []
    for _ in range(answers):
        item = answer()
        started = time.perf_counter()
        store.record([item])
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.record([answer()]), range(answers)))
    concurrent_s = time.perf_counter() - started
    store.engine.dispose()
    return {
        "one_writer_median_ms": round(1000 * median(single), 2),
        "one_writer_p99_ms": round(1000 * percentile(single, 0.99), 2),
        "eight_writers_answers_per_s": round(answers / concurrent_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=500)
    parser.add_argument("--postgres", help="a postgresql+psycopg:// URL; default: start a server here")
    args = parser.parse_args(argv)
    figures = {"machine": title(describe_machine()["machine"]), "answers": args.answers}
    with tempfile.TemporaryDirectory(prefix="mnist-store-") as scratch:
        log("SQLite ...")
        figures["sqlite_file"] = measure(f"sqlite:///{Path(scratch) / 'serving.db'}", args.answers)
    with contextlib.ExitStack() as stack:
        url = args.postgres
        if url is None:
            sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools")]  # the tests' helpers, and what they import
            from helpers.postgres import postgres_server

            url = stack.enter_context(postgres_server(durable=True))
        log("PostgreSQL ...")
        figures["postgresql"] = measure(url, args.answers)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
