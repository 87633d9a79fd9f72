"""The package's architecture, checked from its imports: verbs on top, imports pointing only down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT

PACKAGE = ROOT / "mnist_lightning"
VERBS = {"train", "evaluate", "predict", "summarize", "serve", "export", "register", "promote", "retrain"}
# what each subpackage may import from the package (besides itself): a layer only builds on those below it
ALLOWED = {
    "serving": {"inference", "models", "data", "runs", "store", "errors"},
    "store": {"errors"},
    "artifacts": {"inference", "models", "data", "runs", "errors"},
    "cli": {"runs", "training", "models", "errors"},
    "training": {"models", "runs", "errors"},
    "inference": {"data", "models", "runs", "errors"},
    "data": {"errors"},
    "models": {"errors"},
    "runs": {"errors"},
    "errors": set(),
}


def package_imports(path: Path) -> set[str]:
    """The second-level names (`runs`, `train`, ...) of every `mnist_lightning.*` import in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = (
                [node.module]
                if node.module != "mnist_lightning"
                else [f"mnist_lightning.{alias.name}" for alias in node.names]
            )
        found |= {name.split(".")[1] for name in names if name.startswith("mnist_lightning.")}
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_top_level_holds_only_the_verbs():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "errors"}
    assert top == VERBS, "a module that is not a verb belongs in a subpackage"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {*ALLOWED} - {"errors"}


def test_the_configs_live_at_the_top_level_and_every_package_is_installed():
    """conf/ is the package mnist_lightning.conf once installed; pyproject.toml lists the packages by hand (no
    package search finds a package whose folder is not under its parent), so a new subpackage must be added there."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"mnist_lightning.conf": "conf"}
    assert (ROOT / "conf" / "train.yaml").is_file() and not (PACKAGE / "conf").exists()
    inits = [*PACKAGE.rglob("__init__.py"), *ROOT.glob("hydra_plugins/*/__init__.py")]
    in_tree = {".".join(p.parent.relative_to(ROOT).parts) for p in inits}
    expected = in_tree | {"mnist_lightning.conf", "hydra_plugins"}
    assert set(setuptools["packages"]) == expected, "add the new package to pyproject.toml"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path):
    imported = package_imports(path)
    layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if layer in VERBS:
        assert not imported & (VERBS - {layer}), f"a verb imports another verb: {imported & VERBS}"
    elif layer != "__init__":
        upward = imported - ALLOWED[layer] - {layer}
        assert not upward, f"{layer} imports {sorted(upward)}, which is not below it"


def test_the_optuna_plugin_imports_no_verb():
    for path in (ROOT / "hydra_plugins").rglob("*.py"):
        assert not package_imports(path) & VERBS, path


def test_networks_are_plain_modules():
    for name in ("cnn.py", "mlp.py"):
        source = (PACKAGE / "models" / name).read_text()
        assert "lightning" not in source and "hydra" not in source and "mnist_lightning" not in source


def test_inference_and_checkpoint_loading_need_neither_lightning_nor_hydra():
    code = (
        "import sys; import mnist_lightning.inference.torch_runtime, mnist_lightning.inference.model, "
        "mnist_lightning.models.checkpoint; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'hydra', 'pytorch_lightning')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_checkpoint_written_before_the_package_was_reorganised_still_loads(tmp_path):
    """tests/data/pre_layout.ckpt was written by the flat package (commit 862074f): a 16-wide perceptron trained one
    step, its module paths from before the move. It loads for prediction and for a resume check."""
    from mnist_lightning.models.checkpoint import load_network
    from mnist_lightning.models.lit_module import MNISTLitModule
    from mnist_lightning.training.resume import check_resumable

    old = ROOT / "tests" / "data" / "pre_layout.ckpt"
    network = load_network(old)
    assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    module = MNISTLitModule.load_from_checkpoint(old, map_location="cpu", weights_only=True)
    assert torch.equal(module.net.layers[1].weight, network.layers[1].weight)
    check_resumable(old, {"arch": "mlp", "hidden": [16], "dropout": 0.2})
