"""`python -m mnist_lightning.export`: ONNX and torch.export artifacts with proven parity, and runtime=onnx."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
import numpy as np
import onnx
import pytest
import torch

from helpers import ROOT, free_port, run_cli, run_without, start_server, stop_server
from mnist_lightning.artifacts import export as artifacts
from mnist_lightning.data.files import load_split
from mnist_lightning.data.transforms import normalize
from mnist_lightning.errors import UserError
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.inference.onnx_runtime import OnnxModel
from mnist_lightning.inference.torch_runtime import TorchModel
from mnist_lightning.models import NETWORKS, build_network
from mnist_lightning.models.checkpoint import load_network
from mnist_lightning.runs import lineage, model_json
from mnist_lightning.runs.lineage import sha256sum

pytestmark = pytest.mark.slow  # exports the shared trained model once, then runs it


def test_the_export_folder_holds_the_three_files_described(exported):
    _, checkpoint, folder, result = exported
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx", "model.pt2"]  # no .data file
    meta = model_json.read_meta(folder)
    assert meta == json.loads((folder / "model.json").read_text())  # what is written is what is read
    assert meta["model_version"] == lineage.sha256sum(checkpoint)[:12] and meta["checkpoint"] == str(checkpoint)
    assert meta["network"] == {
        "name": "cnn",
        "arguments": {"conv1_channels": 32, "conv2_channels": 64, "hidden": 128, "dropout1": 0.25, "dropout2": 0.5},
    }
    assert meta["input"]["normalisation"]["mean"] == 0.1307 and meta["input"]["normalisation"]["std"] == 0.3081
    assert meta["input"]["name"] == "image" and meta["output"]["name"] == "logits"
    assert meta["test_accuracy"] > 0.95 and meta["exported_with"]["onnx"] == onnx.__version__
    assert meta["test_images"] == json.loads((checkpoint.parent.parent / "metrics.json").read_text())["test_samples"]
    check = meta["verification"]
    assert check["images"] == 10_000 and check["differing_predictions"] == {"onnxruntime": 0, "pt2": 0}
    assert max(check["max_abs_logit_diff"].values()) < 1e-4
    assert meta["files"]["onnx"]["sha256"] == lineage.sha256sum(folder / "model.onnx")
    graph = onnx.load(str(folder / "model.onnx")).graph
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*graph.input, *graph.output)
    }
    assert shapes == {"image": ["batch", 1, 28, 28], "logits": ["batch", 10]}
    assert meta["files"]["onnx"]["opset"] >= 18
    assert "same predictions" in result.stderr


def test_both_formats_match_pytorch_on_the_whole_test_set(exported, mnist_dir):
    _, checkpoint, folder, _ = exported
    images, labels = load_split(mnist_dir, train=False)
    network = load_network(checkpoint)
    onnx_model = OnnxModel(folder / "model.onnx")
    pt2 = torch.export.load(folder / "model.pt2").module()
    reference, outputs = [], {"onnxruntime": [], "pt2": []}
    with torch.inference_mode():
        for chunk in images.split(64):  # small batches: what a CPU runs fastest
            x = normalize(chunk)
            reference.append(network(x).numpy())
            outputs["onnxruntime"].append(onnx_model.logits(x.numpy()))
            outputs["pt2"].append(pt2(x).numpy())
    reference = np.concatenate(reference)
    outputs = {name: np.concatenate(parts) for name, parts in outputs.items()}
    for name, logits in outputs.items():
        assert (logits.argmax(1) == reference.argmax(1)).all(), name
        assert np.abs(logits - reference).max() < 1e-4, name


@pytest.mark.parametrize("batch", [1, 257])
def test_the_batch_axis_is_dynamic(exported, batch):
    _, checkpoint, folder, _ = exported
    x = torch.randn(batch, 1, 28, 28)
    with torch.inference_mode():
        reference = load_network(checkpoint)(x).numpy()
        onnx_logits = OnnxModel(folder / "model.onnx").logits(x.numpy())
        pt2_logits = torch.export.load(folder / "model.pt2").module()(x).numpy()
    assert onnx_logits.shape == pt2_logits.shape == (batch, 10)
    assert np.abs(onnx_logits - reference).max() < 1e-4 and np.abs(pt2_logits - reference).max() < 1e-4


def test_a_corrupted_onnx_file_is_one_clear_error(exported, mnist_dir, tmp_path):
    cwd, checkpoint, folder, _ = exported
    broken = tmp_path / "export"
    shutil.copytree(folder, broken)
    (broken / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:5000])
    with pytest.raises(UserError, match="model.onnx: not a loadable ONNX model .* export the model again"):
        LoadedModel.load(checkpoint, "onnx", export_dir=broken)
    result = run_cli(
        "mnist_lightning.predict",
        f"image={ROOT / 'examples'}",
        f"ckpt_path={checkpoint}",
        "runtime=onnx",
        f"export_dir={broken}",
        "visualize=false",
        cwd=cwd,
        data_dir=mnist_dir,
    )
    assert result.returncode == 2 and "not a loadable ONNX model" in result.stderr and "Traceback" not in result.stderr


def test_an_export_of_another_checkpoint_is_refused(exported, trained, tmp_path):
    _, _, folder, _ = exported
    other = next((trained[1] / "checkpoints").glob("epoch_00-*.ckpt"))  # the first epoch: other weights
    with pytest.raises(UserError, match="holds the export of model .* not of .*epoch_00-"):
        LoadedModel.load(other, "onnx", export_dir=folder)


def test_runtime_auto_runs_the_export_only_when_it_is_this_checkpoints(exported, trained, tmp_path):
    """serve's default: ONNX Runtime for a checkpoint exported as it is, PyTorch for the rest."""
    _, checkpoint, folder, _ = exported
    assert LoadedModel.load(checkpoint, "auto").runtime == "onnxruntime"
    on_gpu = torch.cuda.is_available()  # device=auto: torch on the GPU where there is one
    assert LoadedModel.load(checkpoint, "auto", device="auto").runtime == ("torch" if on_gpu else "onnxruntime")
    assert LoadedModel.load(checkpoint, "auto", export_dir=tmp_path).runtime == "torch"  # nothing exported there
    other = next((trained[1] / "checkpoints").glob("epoch_00-*.ckpt"))
    assert LoadedModel.load(other, "auto", export_dir=folder).runtime == "torch"  # another checkpoint's export
    assert LoadedModel.load(checkpoint, "auto", device="cpu").classifier.probabilities([np.zeros((28, 28))]).shape == (
        1,
        10,
    )


def predictions(cwd, mnist_dir, checkpoint, tmp_path, *extra) -> list[dict]:
    out = tmp_path / f"predictions{len(extra)}.jsonl"
    result = run_cli(
        "mnist_lightning.predict",
        f"image={ROOT / 'examples'}",
        f"ckpt_path={checkpoint}",
        f"predictions_file={out}",
        "visualize=false",
        *extra,
        cwd=cwd,
        data_dir=mnist_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_predict_and_serve_with_runtime_onnx_give_the_default_answers(exported, mnist_dir, tmp_path):
    cwd, checkpoint, _, _ = exported
    torch_answers = predictions(cwd, mnist_dir, checkpoint, tmp_path)
    onnx_answers = predictions(cwd, mnist_dir, checkpoint, tmp_path, "runtime=onnx")
    assert len(torch_answers) == len(onnx_answers) == 9
    for a, b in zip(torch_answers, onnx_answers, strict=True):
        assert a["path"] == b["path"] and a["prediction"] == b["prediction"]
        assert np.abs(np.array(a["probabilities"]) - np.array(b["probabilities"])).max() < 1e-4

    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "runtime=onnx")
    try:
        assert httpx.get(f"{server.url}/model").json()["runtime"] == "onnxruntime"
        for answer in torch_answers:
            with open(answer["path"], "rb") as image:
                served = httpx.post(f"{server.url}/predict", files={"file": image}).json()
            assert served["prediction"] == answer["prediction"]
            assert np.abs(np.array(served["probabilities"]) - np.array(answer["probabilities"])).max() < 1e-4
    finally:
        stop_server(server)


def test_predict_with_runtime_onnx_does_not_import_torch(exported, mnist_dir):
    cwd, checkpoint, _, _ = exported
    code = (
        "import sys; sys.argv = ['predict', sys.argv[1], sys.argv[2], 'runtime=onnx', 'visualize=false']; "
        "from mnist_lightning.predict import main\ntry:\n    main()\nfinally:\n"
        "    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)"
    )
    result = python_code(code, f"image={ROOT / 'examples' / '1_paper.jpg'}", f"ckpt_path={checkpoint}", cwd, mnist_dir)
    assert "torch imported: False" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("runtime", ["runtime=onnx", "device=cpu"])
def test_serve_with_runtime_onnx_or_an_export_does_not_import_torch(exported, mnist_dir, runtime):
    """Everything serve does before the server answers (settings, model, prediction log, the app) without torch:
    the onnx container image has none; nor does the default (runtime=auto) with an export on the CPU. uvicorn.run is
    replaced by a report of what was imported."""
    cwd, checkpoint, _, _ = exported
    code = (
        "import sys, uvicorn\n"
        "def report(app, **options):\n"
        "    print('app built:', type(app).__name__, 'torch imported:', 'torch' in sys.modules, file=sys.stderr)\n"
        "uvicorn.run = report\n"
        f"sys.argv = ['serve', sys.argv[1], '{runtime}', f'port={{sys.argv[2]}}', 'store.url=null']\n"
        "from mnist_lightning.serve import main\n"
        "main()"
    )
    result = python_code(code, f"ckpt_path={checkpoint}", str(free_port()), cwd, mnist_dir)
    assert "app built: FastAPI torch imported: False" in result.stderr, result.stderr[-2000:]


def python_code(code: str, first: str, second: str, cwd, mnist_dir) -> subprocess.CompletedProcess:
    """`python -c code first second` in the project folder, as the commands run there."""
    return subprocess.run(
        [sys.executable, "-c", code, first, second],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MNIST_DATA_DIR": str(mnist_dir)},
    )


class ExportAware(torch.nn.Module):
    """Gives other answers while it is being exported than when it runs: an export that must be refused."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_network(arch="mlp", hidden=[8])

    def forward(self, x):
        return self.net(x) + (1.0 if torch.compiler.is_exporting() else 0.0)


def test_an_export_that_differs_from_pytorch_is_refused_and_leaves_no_files(mnist_dir, tmp_path):
    images, labels = load_split(mnist_dir, train=False)
    checkpoint = tmp_path / "mlp.ckpt"
    network = ExportAware().eval()
    torch.save(
        {
            "hyper_parameters": {"net": {"arch": "mlp", "hidden": [8]}},
            "state_dict": {f"net.{k}": v for k, v in network.net.state_dict().items()},
        },
        checkpoint,
    )
    with pytest.raises(artifacts.ExportMismatch, match="does not match PyTorch on the 1,000 test images"):
        artifacts.export(handle(network, checkpoint), tmp_path / "export", images[:1000], labels[:1000])
    assert list((tmp_path / "export").iterdir()) == []


def test_without_the_export_extra_one_line_says_what_to_install(tmp_path, mnist_dir):
    result = run_without("onnxscript", "export", tmp_path, mnist_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "exporting needs the export extra (onnxscript missing): pip install 'mnist-lightning[export]'" in result.stderr
    )


@pytest.mark.parametrize("arch", sorted(set(NETWORKS) - {"cnn"}))  # the seed CNN: the `exported` fixture
def test_every_other_network_exports_with_parity(arch, mnist_dir, tmp_path):
    images, labels = load_split(mnist_dir, train=False)
    torch.manual_seed(0)
    network = build_network(arch).eval()  # batch norm in eval mode: its running statistics are part of the graph
    checkpoint = tmp_path / f"{arch}.ckpt"
    torch.save({"hyper_parameters": {"net": {"arch": arch}}, "state_dict": {}}, checkpoint)
    meta = artifacts.export(handle(network, checkpoint), tmp_path / "export", images[:1000], labels[:1000])
    assert meta["network"]["name"] == arch
    assert meta["verification"]["images"] == 1000, meta["verification"]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["model.json", "model.onnx", "model.pt2"]


def handle(network, checkpoint):
    """A LoadedModel around a network built in the test (its checkpoint holds only the network's spec)."""
    net = dict(torch.load(checkpoint, weights_only=True)["hyper_parameters"]["net"])
    return LoadedModel(TorchModel(network), checkpoint, sha256sum(checkpoint), net, None)
