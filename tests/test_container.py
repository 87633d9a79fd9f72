"""The container image and the compose stack in a real engine (Docker): `make image` builds the onnx image from the
wheelhouse on a base made without a registry; a container serves a trained run's export from a mounted outputs/
as the same model does in-process, as a user without privileges, reported healthy by Docker, stopped gracefully;
compose.yaml brings up the service, PostgreSQL and Prometheus, all healthy, with Prometheus scraping the service."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from helpers import ROOT, free_port, run_cli
from mnist_lightning.inference.model import LoadedModel

ENGINE_HELP = (
    "a running Docker engine: apt-get install docker.io debootstrap docker-compose, then start it as root with "
    "`dockerd &` (docs/container.md)"
)
# Where a registry is reachable, MNIST_TEST_BASE_IMAGE=python:3.11-slim-bookworm tests on the public images (and
# compose.yaml's own); else the images from Debian's packages that container/base_image.sh makes (root)
PUBLIC_BASE = os.environ.get("MNIST_TEST_BASE_IMAGE")
BASE = PUBLIC_BASE or "mnist-lightning-base:bookworm"
STAND_INS = (
    {}
    if PUBLIC_BASE
    else {
        "POSTGRES_IMAGE": "mnist-lightning-postgres:bookworm",
        "PROMETHEUS_IMAGE": "mnist-lightning-prometheus:bookworm",
    }
)
TAG = f"mnist-lightning:test-onnx-{secrets.token_hex(4)}"  # this session's own: other checkouts may test beside it
UID = 10001  # the image's user (Dockerfile)
# the torch family and training's libraries: what the onnx image leaves out
TRAINING_ONLY = {"torch", "torchvision", "lightning", "torchmetrics", "tensorboard", "matplotlib", "optuna"}


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_onnx_image_installs_only_declared_dependencies_and_no_torch():
    """container/onnx-requirements.txt cannot drift from pyproject.toml: each name is a dependency of the project
    or of one of its extras, and none of them is torch or training's."""
    import tomllib  # Python 3.11+, as test_layout's

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {name(r) for r in project["dependencies"]}
    declared |= {name(r) for extra in project["optional-dependencies"].values() for r in extra}
    lines = (ROOT / "container" / "onnx-requirements.txt").read_text().splitlines()
    listed = {name(line) for line in lines if line.strip() and not line.startswith("#")}
    assert listed, "no requirement listed"
    assert listed <= declared, f"not declared in pyproject.toml: {sorted(listed - declared)}"
    assert not listed & TRAINING_ONLY, f"the onnx image would hold {sorted(listed & TRAINING_ONLY)}"
    core = (
        {name(r) for r in project["dependencies"]}
        - TRAINING_ONLY
        - {"hydra-joblib-launcher", "hydra-submitit-launcher"}
    )
    assert core <= listed, f"serving needs these core dependencies too: {sorted(core - listed)}"
    extras = {name(r) for extra in ("serve", "postgres", "mlflow") for r in project["optional-dependencies"][extra]}
    assert extras <= listed, f"the serve, postgres and mlflow extras need these too: {sorted(extras - listed)}"


@pytest.fixture(scope="module")
def engine():
    assert shutil.which("docker"), f"the docker command is missing: {ENGINE_HELP}"
    info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=60)
    assert info.returncode == 0, f"no Docker engine answers ({info.stderr.strip()}): {ENGINE_HELP}"
    return info.stdout.strip()


@pytest.fixture(scope="module")
def local_images(engine):
    """The base image and compose.yaml's stand-ins from Debian's packages (no registry here); the script keeps
    images it made before, so a second run costs nothing."""
    if PUBLIC_BASE:
        return
    result = subprocess.run(
        ["bash", str(ROOT / "container" / "base_image.sh"), "--compose"], capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def image(local_images):
    """`make image RUNTIME=onnx` on the local base, tagged for the tests; removed afterwards."""
    started = time.monotonic()
    result = subprocess.run(
        ["make", "image", "RUNTIME=onnx", f"BASE_IMAGE={BASE}", f"TAG={TAG}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    print(f"make image RUNTIME=onnx: {time.monotonic() - started:.0f} s")
    yield TAG
    docker("rmi", "--force", TAG, check=False)
    # the build's intermediate stages (the install stage holds every wheel), labelled in the Dockerfile
    docker("image", "prune", "--force", "--filter", "label=org.mnist-lightning.stage", check=False)


@pytest.fixture
def mounted_outputs(exported, tmp_path):
    """A copy of the exported project's outputs/ that the image's user may write (its service run folders and the
    prediction log go there), without root here; (folder, checkpoint inside the container, checkpoint here)."""
    cwd, checkpoint, _, _ = exported
    outputs = tmp_path / "outputs"
    shutil.copytree(cwd / "outputs", outputs, ignore=shutil.ignore_patterns("serve", "*.db", "mlartifacts", "registry"))
    writable_by_anyone(outputs)
    inside = Path("/app/outputs") / checkpoint.relative_to(cwd / "outputs")
    return outputs, inside, outputs / checkpoint.relative_to(cwd / "outputs")


def writable_by_anyone(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)


def wait_healthy(container: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
        if status == "healthy":
            return status
        assert status in ("starting", "healthy"), (
            f"{container} is {status}:\n{docker('logs', container).stderr[-3000:]}"
        )
        time.sleep(1)
    raise AssertionError(f"{container} still {status} after {timeout} s:\n{docker('logs', container).stderr[-3000:]}")


@pytest.mark.slow
def test_a_container_serves_the_mounted_run_as_in_process_and_stops_gracefully(image, mounted_outputs):
    outputs, inside, checkpoint = mounted_outputs
    # the entrypoint's refusals, one line each, before anything starts
    moved = docker("run", "--rm", "--volume", f"{outputs}:/app/outputs", image, "port=9000", check=False)
    assert moved.returncode == 2 and "port=9000: the image serves on 0.0.0.0:8000" in moved.stderr, moved.stderr
    unwritable = docker("run", "--rm", "--volume", f"{outputs}:/app/outputs:ro", image, check=False)
    assert unwritable.returncode == 2 and "/app/outputs is not writable by uid 10001" in unwritable.stderr

    port = free_port()
    container = f"mnist-test-{secrets.token_hex(4)}"
    docker(
        "run", "--detach", "--name", container, "--publish", f"127.0.0.1:{port}:8000",
        "--volume", f"{outputs}:/app/outputs", image, f"ckpt_path={inside}",
    )  # fmt: skip
    try:
        assert wait_healthy(container) == "healthy"
        url = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{url}/health", timeout=10).json()
        local = LoadedModel.load(checkpoint, "onnx")
        assert health == {"status": "ok", "model_version": local.version}

        # the same image gets the same answer as the same model in-process (same ONNX Runtime, from the lock)
        for example in sorted((ROOT / "examples").glob("*"))[:4]:
            with open(example, "rb") as file:
                answer = httpx.post(f"{url}/predict", files={"file": (example.name, file)}, timeout=30).json()
            expected, _ = local.classify([Image.open(example)])[0]
            assert answer["prediction"] == expected["prediction"], example.name
            assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=2e-6), example.name
            assert answer["model_version"] == local.version

        # no privileges: the image's user runs the service (PID 1), and torch is not in the image
        assert docker("inspect", "--format", "{{.Config.User}}", container).stdout.strip() == f"{UID}:{UID}"
        status = docker("exec", container, "cat", "/proc/1/status").stdout
        assert re.search(rf"^Uid:\s+{UID}\s+{UID}\s", status, re.MULTILINE), status
        assert "mnist-serve" in docker("exec", container, "cat", "/proc/1/cmdline").stdout
        no_torch = docker("exec", container, "python", "-c", "import torch", check=False)
        assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
        # the service wrote its run folder and prediction log into the mount, as its user
        assert (outputs / "serving.db").stat().st_uid == UID
        assert list((outputs / "serve").glob("*/*/serve.log"))

        # docker stop: SIGTERM reaches uvicorn, which shuts down well within the grace period, exit status 0
        started = time.monotonic()
        docker("stop", "--time", "30", container, timeout=60)
        stopped_in = time.monotonic() - started
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout)
        assert state["ExitCode"] == 0 and not state["OOMKilled"], state
        assert stopped_in < 20, f"docker stop took {stopped_in:.1f} s: SIGTERM did not stop the service"
        assert "Finished server process" in docker("logs", container).stderr
    finally:
        docker("rm", "--force", container, check=False)


def compose_command() -> list[str]:
    """Compose v2 (the docker plugin) where it is installed, else Debian's docker-compose (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    assert found, f"neither `docker compose` nor docker-compose is installed: {ENGINE_HELP}"
    return [found]


@pytest.mark.slow
def test_the_compose_stack_comes_up_healthy_and_prometheus_scrapes_the_service(image, mounted_outputs, mnist_dir):
    outputs, _, checkpoint = mounted_outputs
    project = f"mnist-test-{secrets.token_hex(4)}"
    mnist_port, prometheus_port = free_port(), free_port()
    env = {
        **os.environ,
        **STAND_INS,
        "MNIST_IMAGE": image,
        "MNIST_OUTPUTS": str(outputs),
        "MNIST_PORT": str(mnist_port),
        "PROMETHEUS_PORT": str(prometheus_port),
        "POSTGRES_PASSWORD": secrets.token_hex(12),
    }
    # the model from the registry, registered here (with its export) under the absolute path of this folder: the
    # service finds it under /app/outputs
    registered = run_cli("mnist_lightning.register", f"ckpt_path={checkpoint}", cwd=outputs.parent, data_dir=mnist_dir)
    assert registered.returncode == 0, registered.stderr[-3000:]
    writable_by_anyone(outputs)
    env["MODEL_REF"] = "registry:mnist-cnn@champion"
    compose = [*compose_command(), "--file", str(ROOT / "compose.yaml"), "--project-name", project]

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run([*compose, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result

    run("up", "--detach")
    try:
        containers = {
            service: run("ps", "--quiet", service).stdout.strip() for service in ("mnist", "postgres", "prometheus")
        }
        for service, container in containers.items():
            assert container, f"{service} did not start:\n{run('logs').stdout[-3000:]}"
            wait_healthy(container)

        # the service answers on its port and writes to PostgreSQL (the prediction log counts the answer)
        url = f"http://127.0.0.1:{mnist_port}"
        local = LoadedModel.load(checkpoint, "onnx")
        assert httpx.get(f"{url}/health", timeout=10).json()["model_version"] == local.version
        example = ROOT / "examples" / "0_mnist.png"
        answer = httpx.post(f"{url}/predict", files={"file": (example.name, example.read_bytes())}, timeout=30)
        assert answer.status_code == 200, answer.text
        logs = run("logs", "mnist").stdout
        assert "Prediction log: postgresql+psycopg://mnist@postgres:5432/mnist" in logs, logs[-3000:]
        assert "/app/outputs/registry/mnist-cnn/v1/" in logs, logs[-3000:]
        monitoring = httpx.get(f"{url}/monitoring", timeout=10).json()
        assert monitoring["models"][0]["samples"] == 1, monitoring
        # every client comes through Docker's proxy from one address: the drift window still fills (no share cap)
        digit = example.read_bytes()
        with httpx.Client(timeout=30) as client:
            for _ in range(monitoring["min_samples"]):
                assert client.post(f"{url}/predict", files={"file": ("0.png", digit)}).status_code == 200
        monitoring = httpx.get(f"{url}/monitoring", timeout=10).json()
        assert monitoring["models"][0]["status"] in ("ok", "warn", "alert"), monitoring

        # Prometheus scrapes it (target up) with the project's alert rules loaded
        api = f"http://127.0.0.1:{prometheus_port}/api/v1"
        deadline, targets = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            targets = httpx.get(f"{api}/targets", timeout=10).json()["data"]["activeTargets"]
            if targets and all(target["health"] == "up" for target in targets):
                break
            time.sleep(1)
        assert [(t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in targets] == [
            ("mnist", "http://mnist:8000/metrics", "up")
        ], targets
        groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        alerts = {rule["name"] for group in groups for rule in group["rules"]}
        assert "MnistDriftAlert" in alerts and len(alerts) == 8, alerts
    finally:
        subprocess.run(
            [*compose, "down", "--volumes", "--timeout", "30"], cwd=ROOT, env=env, capture_output=True, timeout=300
        )
