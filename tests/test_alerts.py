"""The alert rules in monitoring/: promtool's checks and unit tests, then a real Prometheus server scraping a real
service, quiet while the service answers held-out digits, firing the drift alert once the digits are rotated."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

import renderings
from helpers import ROOT, free_port, start_server, stop_server
from mnist_lightning.data.files import load_split

MONITORING = ROOT / "monitoring"
INSTALL = "install Debian's prometheus package (apt-get install prometheus), which brings promtool"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: {INSTALL}"
    return found


def test_the_rules_pass_promtool_and_their_unit_tests():
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run([tool("promtool"), *command], cwd=MONITORING, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    covered = {case["alertname"] for test in tested for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert covered == {rule["alert"] for rule in rules}, "every alert has a unit test in which it fires"


@pytest.fixture
def prometheus(tmp_path):
    """Starts Debian's Prometheus on a free port with the project's rules, every `for:` shortened to 0s (a test
    cannot wait five minutes; alerts_test.yml checks the real durations); yields (start(target), API URL)."""
    port, processes = free_port(), []
    rules = (MONITORING / "alerts.yml").read_text()
    shortened = "\n".join(
        line.split("for:")[0] + "for: 0s" if line.strip().startswith("for:") else line for line in rules.splitlines()
    )
    (tmp_path / "alerts.yml").write_text(shortened + "\n")

    def start(target: str) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "alerts.yml")],
            "scrape_configs": [{"job_name": "mnist", "static_configs": [{"targets": [target]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        command = [
            tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed with the process
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError("Prometheus did not get ready:\n" + (tmp_path / "prometheus.log").read_text()[-3000:])

    yield start, f"http://127.0.0.1:{port}/api/v1"
    for process, log in processes:
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.close()


def query(api: str, expression: str) -> list[dict]:
    answer = httpx.get(f"{api}/query", params={"query": expression}).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def alerts(api: str) -> list[dict]:
    return httpx.get(f"{api}/alerts").json()["data"]["alerts"]


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"waited {timeout} s for {what}")


def send(url: str, images: list[np.ndarray]) -> None:
    for start in range(0, len(images), 50):
        chunk = images[start : start + 50]
        files = [("files", (f"{i}.png", renderings.encode(Image.fromarray(a), "PNG"))) for i, a in enumerate(chunk)]
        assert httpx.post(f"{url}/predict/batch", files=files, timeout=60).status_code == 200


@pytest.mark.slow  # a service and a Prometheus server
def test_prometheus_fires_the_drift_alert_for_rotated_digits_and_stays_quiet_for_held_out_ones(
    prometheus, exported, mnist_dir, tmp_path
):
    start_prometheus, api = prometheus
    _, checkpoint, _, _ = exported
    server = start_server(
        tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "monitoring.window=300", "monitoring.min_samples=300"
    )
    try:
        start_prometheus(f"127.0.0.1:{server.port}")
        wait_for(lambda: query(api, 'up{job="mnist"} == 1'), "the first scrape of the service")
        version = httpx.get(f"{server.url}/health").json()["model_version"]

        images, _ = load_split(mnist_dir, train=False)
        images = images.numpy()
        held_out = list(images[np.random.default_rng(0).permutation(len(images))[:300]])
        send(server.url, held_out)
        ok = f'mnist_drift_status{{model_version="{version}",status="ok"}} == 1'
        try:
            wait_for(lambda: query(api, ok), "drift status ok in Prometheus")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the service says {httpx.get(f'{server.url}/monitoring').text}") from None
        time.sleep(3)  # a few rule evaluations on it
        assert not [a for a in alerts(api) if a["labels"]["alertname"].startswith("MnistDrift")], alerts(api)

        send(server.url, [np.ascontiguousarray(np.rot90(image)) for image in images[2500:2800]])
        firing = wait_for(
            lambda: [
                a for a in alerts(api) if a["labels"]["alertname"] == "MnistDriftAlert" and a["state"] == "firing"
            ],
            "MnistDriftAlert to fire",
        )
        assert firing[0]["labels"]["model_version"] == version and firing[0]["labels"]["severity"] == "critical"
        assert not [a for a in alerts(api) if a["labels"]["alertname"] in ("MnistServerErrors", "MnistDown")]
    finally:
        stop_server(server)
