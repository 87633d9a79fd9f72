"""The service against hostile input and untrusted clients, in-process (TestClient on an untrained perceptron):
crafted files, requests that once crashed the error handler, the token, other origins' pages, per-client limits
and the decode budget. What only a real server shows (memory, slow clients, connection limits, the schema fuzzed)
is in test_serve_limits.py; docs/security.md states the trust model these check."""

from __future__ import annotations

import json
import stat
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import MALFORMED, encoded, hostile_images, png_bytes, scribbles, serve_config, tiny_run
from mnist_lightning.errors import UserError
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.serve import service_settings
from mnist_lightning.serving.ab import kept_salt
from mnist_lightning.serving.app import create_app
from mnist_lightning.serving.limits import Busy, DecodeBudget
from mnist_lightning.serving.settings import Auth, Cors, Limits, Monitoring, ServeSettings

TOKEN = "s3cret-token-of-24-chars"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> LoadedModel:
    return LoadedModel.load(tiny_run(tmp_path_factory.mktemp("hostile"), seed=0))


@pytest.fixture(scope="module")
def crafted() -> dict[str, tuple[bytes, int]]:
    return hostile_images()


def app(model, **settings) -> TestClient:
    return TestClient(create_app(model, ServeSettings(**settings)))


def digit() -> bytes:
    return png_bytes(scribbles(1, seed=3)[0])


def test_crafted_files_get_their_own_status_and_a_detail_never_a_500(model, crafted):
    client = app(model)
    for name, (data, status) in crafted.items():
        started = time.perf_counter()
        response = client.post("/predict", files={"file": (name, data)})
        assert response.status_code == status, (name, response.text[:300])
        assert time.perf_counter() - started < 10, name  # refused from the header, not after decoding
        if status != 200:
            assert set(response.json()) == {"detail"} and response.json()["detail"].startswith(name), name

    def detail(name: str) -> str:
        return client.post("/predict", files={"file": (name, crafted[name][0])}).json()["detail"]

    assert "NaN or infinite" in detail("nan.pfm")
    assert "the formats read here are PNG, JPEG, BMP, GIF, WEBP, PPM" in detail("bomb.ico")  # no ICO, no TIFF
    assert "the formats read here" in detail("nan.tif")
    assert "320 MB, over the limit of 80 MB" in detail("rgba.png")
    assert "4096x4096 pixels of mode CMYK takes 138 MB" in detail("progressive.jpg")
    assert "Too much memory used in text chunks" in detail("text.png")


def test_a_batch_answers_its_good_files_beside_the_crafted_ones(model, crafted):
    names = ["nan.pfm", "cmyk.jpg", "bomb.ico", "rgba.png", "progressive.jpg", "truncated.png"]
    files = [("files", ("good.png", digit()))] + [("files", (name, crafted[name][0])) for name in names]
    response = app(model).post("/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, *(crafted[name][1] for name in names)]
    assert results[0]["prediction"] is not None and all(r["error"] for r in results if r["status"] != 200)


@pytest.mark.parametrize(("what", "arguments", "route", "status"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_requests_that_crashed_the_error_handler_get_a_declared_4xx(model, what, arguments, route, status):
    client = app(model)
    response = client.post(route, **arguments)
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert isinstance(body["detail"], str)
    if status == 422:  # FastAPI's list, without the values sent: type, place and message of each problem
        assert body["errors"] and all(set(error) == {"type", "loc", "msg"} for error in body["errors"])
    declared = client.get("/openapi.json").json()["paths"][route]["post"]["responses"]
    assert str(status) in declared, (route, sorted(declared))
    if status == 422:
        assert declared["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationProblem")


def test_without_a_token_the_schema_asks_for_none(model):
    schema = app(model).get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert all("security" not in operation for path in schema["paths"].values() for operation in path.values())


def test_a_token_guards_feedback_and_with_auth_predict_the_predictions(model):
    client = app(model, auth=Auth(token=TOKEN))
    answer = client.post("/predict", files={"file": ("d.png", digit())})
    assert answer.status_code == 200  # predictions stay open without auth.predict
    label = {"request_id": answer.json()["request_id"], "label": 3}
    missing = client.post("/feedback", json=label)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <token>" in missing.json()["detail"]
    wrong = client.post("/feedback", json=label, headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "wrong token"}
    assert client.post("/feedback", json=label, headers=BEARER).status_code == 200
    assert client.get("/ab").json()["versions"][model.version]["feedback"] == 1  # only the one with the token

    guarded = app(model, auth=Auth(token=TOKEN, predict=True))
    assert guarded.post("/predict", files={"file": ("d.png", digit())}).status_code == 401
    assert guarded.post("/predict/batch", files=[("files", ("d.png", digit()))]).status_code == 401
    assert guarded.post("/predict", files={"file": ("d.png", digit())}, headers=BEARER).status_code == 200
    assert guarded.get("/health").status_code == 200 and guarded.get("/").status_code == 200  # the page loads
    schema = guarded.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {path for path, ops in schema["paths"].items() for op in ops.values() if "security" in op} == {
        "/predict",
        "/predict/batch",
        "/feedback",
    }


def test_model_details_are_for_token_holders(model):
    client = app(model, auth=Auth(token=TOKEN))
    public = client.get("/model").json()
    assert public["details"] is False and public["checkpoint"] is None and public["run_dir"] is None
    assert "git_commit" not in json.dumps(public) and str(model.checkpoint) not in json.dumps(public)
    assert client.get("/model", headers=BEARER).json()["checkpoint"] == str(model.checkpoint)


def test_a_page_of_another_origin_may_not_post(model):
    client = app(model)
    evil = client.post("/predict", files={"file": ("d.png", digit())}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cors.origins=[http://evil.example]" in evil.json()["detail"]
    assert client.post("/feedback", json={"request_id": "x", "label": 1}, headers={"Origin": "null"}).status_code == 403
    own = client.post("/predict", files={"file": ("d.png", digit())}, headers={"Origin": "http://testserver"})
    assert own.status_code == 200  # the drawing page's own requests
    assert "access-control-allow-origin" not in own.headers  # CORS is off by default

    front = app(model, cors=Cors(origins=["http://app.example"]))
    allowed = front.post("/predict", files={"file": ("d.png", digit())}, headers={"Origin": "http://app.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.example"
    preflight = front.options(
        "/feedback",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]


def test_a_client_address_is_limited_to_its_rate_and_token_holders_are_not(model):
    client = app(model, auth=Auth(token=TOKEN), limits=Limits(requests_per_minute=5, feedback_per_hour=2))
    statuses = [client.post("/predict", files={"file": ("d.png", digit())}).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = client.post("/predict", files={"file": ("d.png", digit())})
    assert 1 <= int(refused.headers["retry-after"]) <= 60 and "limits.requests_per_minute" in refused.json()["detail"]
    assert client.get("/health").status_code == 200  # reading the service is not counted
    trusted = [client.post("/predict", files={"file": ("d.png", digit())}, headers=BEARER) for _ in range(8)]
    assert {answer.status_code for answer in trusted} == {200}
    guessing = app(model, auth=Auth(token=TOKEN, predict=True), limits=Limits(requests_per_minute=3))
    wrong = {"Authorization": "Bearer " + "y" * 24}
    guesses = [guessing.post("/predict", files={"file": ("d.png", digit())}, headers=wrong) for _ in range(4)]
    assert [answer.status_code for answer in guesses] == [401, 401, 401, 429]  # guessing tokens is rate-limited

    labels = app(model, limits=Limits(feedback_per_hour=2))
    ids = [labels.post("/predict", files={"file": ("d.png", digit())}).json()["request_id"] for _ in range(3)]
    sent = [labels.post("/feedback", json={"request_id": i, "label": 1}).status_code for i in ids]
    assert sent == [200, 200, 429]


def test_one_client_fills_at_most_its_share_of_the_drift_window(model):
    # host 0.0.0.0: answering other machines, a client may fill a tenth of the window by default
    settings = {"host": "0.0.0.0", "monitoring": Monitoring(window=30, min_samples=10), "auth": Auth(token=TOKEN)}
    client = app(model, **settings)
    images = [png_bytes(drawn) for drawn in scribbles(12, seed=1)]

    def samples() -> int:
        return client.get("/monitoring").json()["models"][0]["samples"]

    for data in images:  # one client: one address
        client.post("/predict", files={"file": ("d.png", data)})
    assert samples() == 3  # a tenth of 30
    for n, data in enumerate(images):  # a new X-Client-Id for every request: still the same address
        client.post("/predict", files={"file": ("d.png", data)}, headers={"X-Client-Id": f"user-{n}"})
    assert samples() == 3
    for data in images:  # a token holder (a trusted backend sending for its users) is not capped
        client.post("/predict", files={"file": ("d.png", data)}, headers=BEARER)
    assert samples() == 15
    behind = app(model, monitoring=Monitoring(window=30, min_samples=10), trusted_proxies=["127.0.0.1"])
    for data in images:  # 127.0.0.1 behind a proxy answers other machines too: capped
        behind.post("/predict", files={"file": ("d.png", data)})
    assert behind.get("/monitoring").json()["models"][0]["samples"] == 3
    loopback = app(model, monitoring=Monitoring(window=30, min_samples=10))  # this machine only: no cap
    for data in images:
        loopback.post("/predict", files={"file": ("d.png", data)})
    assert loopback.get("/monitoring").json()["models"][0]["samples"] == 12


def test_the_decode_budget_makes_large_decodes_wait_then_answers_503(model):
    budget = DecodeBudget(total=100, wait_s=0.3)
    with budget.reserve(80):
        started = time.perf_counter()
        with pytest.raises(Busy, match="no room for one"), budget.reserve(30):
            pass
        assert 0.3 <= time.perf_counter() - started < 2
        with budget.reserve(20):  # what fits goes at once
            assert budget.free == 0
    freed = threading.Timer(0.1, lambda: held.__exit__(None, None, None))
    held = budget.reserve(100)
    held.__enter__()
    freed.start()
    with budget.reserve(50):  # waits for the release, then goes
        assert budget.free == 50
    assert budget.free == 100

    client = app(model, limits=Limits(decode_wait_s=0.2))
    large = encoded(Image.new("L", (2000, 2000)), "PNG")  # 4 MB to decode
    with client.app.state.decode_budget.reserve(240_000_000 - 1_000_000):
        busy = client.post("/predict", files={"file": ("large.png", large)})
        small = client.post("/predict", files={"file": ("d.png", digit())})  # a few KB still fit
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5" and "send it again" in busy.json()["detail"]
    assert small.status_code == 200
    assert client.post("/predict", files={"file": ("large.png", large)}).status_code == 200


def test_a_batch_past_the_requests_decode_limit_answers_the_rest_alone(model):
    one = 2000 * 2000  # an L image's bytes
    client = app(model, limits=Limits(max_image_bytes=one, max_request_bytes=2 * one))
    files = [("files", (f"{i}.png", encoded(Image.new("L", (2000, 2000)), "PNG"))) for i in range(3)]
    results = client.post("/predict/batch", files=files).json()["results"]
    assert [r["status"] for r in results] == [200, 200, 413]
    assert "send it in another request" in results[2]["error"]


def test_service_settings_for_the_token_are_checked_and_never_shown(monkeypatch):
    from omegaconf import OmegaConf

    base = serve_config()
    monkeypatch.setenv("MNIST_SERVE_TOKEN", "12345678901234567890")  # digits stay a string
    assert service_settings(base).auth.token == "12345678901234567890"
    monkeypatch.setenv("MNIST_SERVE_TOKEN", "short-secret")
    with pytest.raises(UserError) as refused:
        service_settings(base)
    assert str(refused.value) == "auth.token=<hidden>: must have at least 16 characters"
    monkeypatch.delenv("MNIST_SERVE_TOKEN")
    with pytest.raises(UserError, match="auth.predict=true needs a token"):
        service_settings(OmegaConf.merge(base, {"auth": {"predict": True}}))
    with pytest.raises(UserError, match="'app.example' is not an origin"):
        service_settings(OmegaConf.merge(base, {"cors": {"origins": ["app.example"]}}))


def test_the_ab_salt_is_made_once_per_experiment_and_kept_private(tmp_path):
    salt = kept_salt(tmp_path, "aaa", "bbb")
    assert len(salt) == 32 and kept_salt(tmp_path, "aaa", "bbb") == salt != kept_salt(tmp_path, "aaa", "ccc")
    assert stat.S_IMODE((tmp_path / "ab-salt-aaa-bbb").stat().st_mode) == 0o600
