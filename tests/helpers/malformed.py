"""Malformed requests: bodies that once crashed the service's validation-error handler, and unparsable ones."""

from __future__ import annotations

MULTIPART = "multipart/form-data; boundary=cut"
MALFORMED = [
    # (what, httpx/TestClient post arguments, route, status): each was answered 500 by the 422 handler, or with a
    # status the OpenAPI schema did not declare
    ("text where a file belongs", {"data": {"file": "notafile"}}, "/predict", 422),
    ("text where files belong", {"data": {"files": "x"}}, "/predict/batch", 422),
    (
        "feedback as text/plain",
        {"content": b"\xff\xfe label 3", "headers": {"content-type": "text/plain"}},
        "/feedback",
        422,
    ),
    ("an infinite label", {"content": b'{"request_id": "x", "label": 1e400}'}, "/feedback", 422),
    ("a label of true", {"json": {"request_id": "x", "label": True}}, "/feedback", 422),
    ("a label as a string", {"json": {"request_id": "x", "label": "3"}}, "/feedback", 422),
    (
        "unparsable JSON",
        {"content": b'{"request_id": ', "headers": {"content-type": "application/json"}},
        "/feedback",
        422,
    ),
    (
        "multipart without a boundary",
        {"content": b"xx", "headers": {"content-type": "multipart/form-data"}},
        "/predict",
        400,
    ),
    (
        "a broken multipart header",
        {"content": b"--cut\r\nbad header\r\n\r\nabc\r\n--cut--\r\n", "headers": {"content-type": MULTIPART}},
        "/predict/batch",
        400,
    ),
]
