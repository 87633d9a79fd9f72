"""Send MNIST test digits to a running server, as traffic for trying A/B serving and drift monitoring.

    python tools/send_digits.py --count 500                   # 500 random test digits, from 100 clients
    python tools/send_digits.py --count 500 --feedback        # and tell the server each true label
    python tools/send_digits.py --count 500 --rotate 90       # the same digits turned sideways: drift
    python tools/send_digits.py --count 500 --rotate 60 --feedback --offset 5000   # a style to retrain on

Each digit goes to POST /predict as a PNG with an X-Client-Id header; with --feedback its true label goes to
POST /feedback. Prints how many each model version answered and how many it got right. The service limits each
address (600 requests a minute, 300 labels an hour): with MNIST_SERVE_TOKEN set (the service's token), requests
carry it and are not limited, as those of a trusted backend.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")
    parser.add_argument("--count", type=int, default=500, help="digits to send (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="which random test digits (default 0)")
    parser.add_argument("--clients", type=int, default=100, help="distinct X-Client-Id values (default 100)")
    parser.add_argument("--rotate", type=int, default=0, help="turn each digit by this many degrees first")
    parser.add_argument("--offset", type=int, default=0, help="skip this many of the shuffled test digits first")
    parser.add_argument("--feedback", action="store_true", help="send each true label to /feedback")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", str(ROOT / "data")))
    args = parser.parse_args(argv)

    from mnist_lightning.data.files import load_split
    from mnist_lightning.errors import DataError

    try:
        images, labels = load_split(args.data_dir, train=False)
    except (DataError, OSError) as exc:
        print(f"error: no MNIST test files under {args.data_dir} ({exc}); give --data-dir", file=sys.stderr)
        return 2
    answered, correct, errors, labelled = Counter(), Counter(), Counter(), Counter()
    token = os.environ.get("MNIST_SERVE_TOKEN")
    # a random sample of the whole test split: its halves differ (the second is easier), and so would their drift
    picked = np.random.default_rng(args.seed).permutation(len(labels))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.url, timeout=60, headers=headers) as http:
        for n in range(args.count):
            i = int(picked[(args.offset + n) % len(labels)])
            digit = Image.fromarray(images[i].numpy())
            if args.rotate % 360:
                digit = digit.rotate(args.rotate, resample=Image.BILINEAR, expand=True)
            buffer = io.BytesIO()
            digit.save(buffer, "PNG")
            try:
                response = http.post(
                    "/predict",
                    files={"file": (f"{i}.png", buffer.getvalue())},
                    headers={"X-Client-Id": f"client-{n % args.clients}"},
                )
            except httpx.TransportError as exc:
                print(
                    f"error: no server at {args.url} ({exc}); start one with python -m mnist_lightning.serve",
                    file=sys.stderr,
                )
                return 2
            body = response.json()
            if response.status_code != 200 or body.get("prediction") is None:
                reason = body.get("detail") or body.get("reason") or f"HTTP {response.status_code}"
                # one line per kind of refusal, not one per number of seconds a 429 asks to wait
                errors[re.sub(r"try again in \d+ s", "try again later", str(reason))] += 1
                continue
            answered[body["model_version"]] += 1
            correct[body["model_version"]] += body["prediction"] == int(labels[i])
            if args.feedback:
                sent = http.post("/feedback", json={"request_id": body["request_id"], "label": int(labels[i])})
                labelled["labelled" if sent.status_code == 200 else sent.json().get("detail", sent.status_code)] += 1
    for version, count in answered.most_common():
        print(f"{version}: {count} answers, {correct[version]} right ({correct[version] / count:.1%})")
    for reason, count in errors.most_common():
        print(f"not answered ({count}): {reason}")
    for outcome, count in labelled.most_common():
        print(f"labels: {count} {outcome}" if outcome == "labelled" else f"labels refused ({count}): {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
