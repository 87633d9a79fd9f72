"""The model registry: MLflow's, with a SQLite store under outputs/ that works offline on one machine.

`register` files a checkpoint (and its export) as a version of a registered model, tagged with its sha256 so the
same checkpoint is never filed twice, and points an alias (champion, challenger) at it. `resolve` turns
`registry:NAME@ALIAS` or `registry:NAME/VERSION` into a local copy of that version's checkpoint, which every
command then loads like any other. MLFLOW_TRACKING_URI points everything at another store or server instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from mnist_lightning.errors import UserError, require_extra
from mnist_lightning.runs import layout, lineage

PREFIX = "registry:"
# a version's files in its run's artifacts, model/<version id>/: checkpoint.ckpt, export/, config.yaml and the run's
# metrics.json (a run can file several checkpoints, e.g. its best and an earlier one)
ARTIFACT_PATH = "model"
CHECKPOINT_NAME = "checkpoint.ckpt"
EXPERIMENT = "mnist"
TAG_VALUE_LIMIT = 5000  # MLflow's limit on a tag's length

# What a registered model's name cannot hold, checked before MLflow is asked. MLflow's own check
# (mlflow.utils.validation._validate_model_name, also called below) refuses a blank name, / and :, and '.' or a name
# starting with '..' (read as a path); its file store also refuses % and cannot hold NUL. MLflow accepts quotes and
# backslashes, but its search filters (name='...', as here) have no documented escape: sqlparse ends the string at
# the quote and reads a backslash as escaping the next character, so such a name is created and then breaks every
# search (register name="a'b" failed after creating the model). Refused too: @, which splits registry:NAME@ALIAS;
# characters that are not printable (a newline breaks the one-line messages); more than 255 bytes, the longest
# folder name for the local copy registry/NAME/ (MLflow's SQL store holds 256 characters).
NAME_REFUSED = "/:%@'\"\\"
NAME_BYTES = 255
NAME_RULE = (
    f"allowed: 1 to {NAME_BYTES} bytes of printable characters other than / : % @ ' \" \\, not '.' nor starting "
    f"with '..', e.g. mnist-cnn"
)
# MLflow's rule for an alias (_validate_model_alias_name); latest (the newest version) and v<number> are its own
# aliases, which a reference may use and register may not set (_validate_model_alias_name_reserved)
ALIAS = re.compile(r"[\w-]{1,255}")
RESERVED_ALIAS = re.compile(r"latest|v\d+", re.IGNORECASE)
ALIAS_RULE = "an alias is 1 to 255 letters, digits, _ or -, e.g. champion or challenger"


def check_name(name: str, given: str) -> str:
    """`name` when MLflow's stores, its search filters and the local copies can all hold it as a registered model's
    name; else one UserError, starting with `given` (the setting, e.g. name=a'b), that says what is allowed."""
    bad = sorted({c for c in name if c in NAME_REFUSED or not c.isprintable()})
    if not name.strip():
        problem = "a registered model's name cannot be blank"
    elif bad:
        shown = " ".join(c if c.isprintable() else ascii(c)[1:-1] for c in bad)
        problem = f"{shown} {'is' if len(bad) == 1 else 'are'} not allowed in a registered model's name"
    elif name == "." or name.startswith(".."):
        problem = "a registered model's name cannot be '.' or start with '..' (MLflow reads it as a path)"
    elif len(name.encode()) > NAME_BYTES:
        problem = f"a registered model's name is at most {NAME_BYTES} bytes ({len(name.encode())} here)"
    else:
        problem = _refused_by_mlflow("_validate_model_name", name)
    if problem:
        raise UserError(f"{_printable(given)}: {problem}; {NAME_RULE}")
    return name


def check_alias(alias: str, given: str, to_set: bool = False) -> str:
    """`alias` when MLflow takes it (and, `to_set`, lets it be set); else one UserError starting with `given`."""
    if not ALIAS.fullmatch(alias):
        problem = ALIAS_RULE
    elif RESERVED_ALIAS.fullmatch(alias) and (to_set or alias.lower() != "latest"):
        problem = (
            "latest and v<number> are MLflow's own aliases (the newest version, version <number>), "
            f"never set; {'set another, e.g. champion' if to_set else 'use registry:NAME@latest or registry:NAME/3'}"
        )
    else:
        problem = _refused_by_mlflow("_validate_model_alias_name", alias) or (
            _refused_by_mlflow("_validate_model_alias_name_reserved", alias) if to_set else None
        )
        if problem:
            problem = f"{problem}; {ALIAS_RULE}"
    if problem:
        raise UserError(f"{_printable(given)}: {problem}")
    return alias


def _refused_by_mlflow(validator: str, value: str) -> str | None:
    """What MLflow's own validator says against `value` (a rule of a newer MLflow); None when it takes it, or when
    MLflow or that validator is missing (client() then says what to install)."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.utils import validation

        validate = getattr(validation, validator)
    except (ImportError, AttributeError):
        return None
    try:
        validate(value)
    except MlflowException as exc:
        return f"MLflow refuses it ({exc.message})"
    return None


def _printable(text: str) -> str:
    return text if text.isprintable() else ascii(text)


def tracking_uri(outputs_root: str | Path) -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store `<outputs_root>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(outputs_root).resolve()}/mlflow.db"


def artifact_location(outputs_root: str | Path) -> str:
    return str(Path(outputs_root).resolve() / "mlartifacts")


def client(outputs_root: str | Path):
    """An MlflowClient on the project's store; one line saying what to install when MLflow is missing."""
    require_extra("mlflow", "mlflow", needed_for="the model registry")
    import mlflow

    for name in ("mlflow", "alembic"):  # their INFO lines (creating tables, migrations) are not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(outputs_root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def parse(reference: str) -> tuple[str, str | None, str | None]:
    """`registry:NAME@ALIAS` -> (NAME, ALIAS, None); `registry:NAME/VERSION` -> (NAME, None, VERSION)."""
    body = reference.removeprefix(PREFIX)
    given = f"model_ref={reference}"
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return check_name(name, given), check_alias(alias, given), None
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version.isascii() and version.isdigit():
            return check_name(name, given), None, version
    raise UserError(
        f"{_printable(given)}: a registry reference is registry:NAME@ALIAS (registry:mnist-cnn@champion) "
        f"or registry:NAME/VERSION (registry:mnist-cnn/3)"
    )


def find_version(reference: str, outputs_root: str | Path):
    """The MLflow ModelVersion a reference names; one clear line for an unknown model, alias or version."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse(reference)
    mlflow_client = client(outputs_root)
    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in mlflow_client.search_registered_models())
        known = f"registered models: {', '.join(names)}" if names else "nothing is registered yet"
        raise UserError(
            f"model_ref={reference}: no registered model {name!r} in {tracking_uri(outputs_root)} "
            f"({known}); register one with python -m mnist_lightning.register"
        ) from None
    try:
        return (
            mlflow_client.get_model_version_by_alias(name, alias)
            if alias
            else mlflow_client.get_model_version(name, version)
        )
    except MlflowException:
        if alias:
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((model.aliases or {}).items())) or "none"
            raise UserError(
                f"model_ref={reference}: {name} has no alias {alias!r} (aliases: {aliases}); set one with "
                f"python -m mnist_lightning.register alias={alias}"
            ) from None
        versions = sorted(int(v.version) for v in mlflow_client.search_model_versions(f"name='{name}'"))
        raise UserError(
            f"model_ref={reference}: {name} has no version {version} (versions: "
            f"{', '.join(map(str, versions)) or 'none'})"
        ) from None


def names_with_alias(alias: str, outputs_root: str | Path) -> list[str]:
    """The registered models that have `alias`, by name."""
    return sorted(m.name for m in client(outputs_root).search_registered_models() if alias in (m.aliases or {}))


def with_alias(alias: str, outputs_root: str | Path) -> str:
    """The name of the one registered model that has `alias`; one line when none or several do."""
    mlflow_client = client(outputs_root)
    names = names_with_alias(alias, outputs_root)
    if len(names) != 1:
        which = f"{', '.join(names)} do" if names else "none does"
        raise UserError(
            f"name=null needs the one registered model with an alias {alias!r}, and {which}: give name=NAME "
            f"(registered: {', '.join(sorted(m.name for m in mlflow_client.search_registered_models())) or 'none'})"
        )
    return names[0]


def version_tags(model_version: str, net: dict, checkpoint: Path, run_dir: Path | None, metrics: dict) -> dict:
    """The tags a registered version carries: its id, network, checkpoint, run, data md5s, config, overrides and
    test figures (what `register` and `retrain` file)."""
    config = run_dir / ".hydra" / "config.yaml" if run_dir else None
    tags = {
        "model_version": model_version,
        "network": json.dumps(net),
        "checkpoint": str(checkpoint),
        "run_dir": str(run_dir) if run_dir else "",
        "data_md5": json.dumps(metrics.get("data_md5") or {}),
        "config": config.read_text() if config and config.is_file() else "",
        "overrides": json.dumps(layout.read_overrides(run_dir)) if run_dir else "[]",
    }
    for key in ("val/acc_best", "test/acc", "test/loss", "epochs", "global_step"):
        if metrics.get(key) is not None:
            tags[f"metric.{key}"] = str(metrics[key])
    return tags


def move_alias(name: str, alias: str, version: str | int, tags: dict[str, str], outputs_root: str | Path) -> None:
    """Point `alias` of `name` at `version`, after setting `tags` on that version (what moved it, and why)."""
    mlflow_client = client(outputs_root)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, str(value)[:TAG_VALUE_LIMIT])
    mlflow_client.set_registered_model_alias(name, alias, str(version))


def resolve(reference: str, outputs_root: str | Path) -> Path:
    """A local copy of the checkpoint a registry reference names, kept in `<outputs_root>/registry/NAME/vN/`
    (with the version's export beside it) and downloaded again only when missing or different."""
    import mlflow

    found = find_version(reference, outputs_root)
    local = Path(outputs_root) / "registry" / found.name / f"v{found.version}"
    checkpoint = local / CHECKPOINT_NAME
    expected = (found.tags or {}).get("checkpoint_sha256")
    if checkpoint.is_file() and lineage.sha256sum(checkpoint) == expected:
        return checkpoint
    from mlflow.exceptions import MlflowException

    source = relocated(found.source, outputs_root)
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=local.parent, prefix=".download-") as scratch:  # never a half copy
        try:
            downloaded = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=scratch, tracking_uri=tracking_uri(outputs_root)
                )
            )
        except (MlflowException, OSError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise UserError(
                f"model_ref={reference}: the files of {found.name} version {found.version} could not be copied "
                f"from {source} to {local.parent} ({reason}); run where that artifact store is reachable and "
                f"{local.parent} writable, or give ckpt_path=FILE"
            ) from exc
        if lineage.sha256sum(downloaded / CHECKPOINT_NAME) != expected:
            raise UserError(
                f"model_ref={reference}: the registered checkpoint does not match its sha256 tag; "
                f"the artifact store ({found.source}) was changed by hand"
            )
        shutil.rmtree(local, ignore_errors=True)
        downloaded.rename(local)
    return checkpoint


def relocated(source: str, outputs_root: str | Path) -> str:
    """Where a version's files are when the store's folder is no longer where it was written: the registry
    records absolute paths (`<outputs_root>/mlartifacts/...`), so a moved outputs/, or one mounted elsewhere as
    in the container image (/app/outputs), would not find them. A local source that does not exist but lies
    inside a folder named mlartifacts is looked up in this outputs root's mlartifacts/."""
    parsed = urlparse(source)
    if parsed.scheme not in ("", "file"):
        return source  # a remote artifact store (s3://, http://, ...), or MLflow's models:/ and runs:/
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else source)
    try:
        if path.exists():
            return source
    except OSError:  # a folder this user may not enter: look for a copy here
        pass
    for index in reversed([i for i, part in enumerate(path.parts) if part == "mlartifacts"]):
        moved = Path(artifact_location(outputs_root)).joinpath(*path.parts[index + 1 :])
        if moved.exists():
            return str(moved)
    return source


def register(
    checkpoint: Path,
    name: str,
    alias: str,
    outputs_root: str | Path,
    export_dir: Path | None,
    tags: dict[str, str],
    run_dir: Path | None = None,
    mlflow_run_id: str | None = None,
) -> dict:
    """File `checkpoint` as a new version of `name` (unless a version with its sha256 exists), point `alias` at it.

    The version's artifacts are the checkpoint, its export (when given) and the run's config; they go to the
    training run's MLflow run when it was logged to this store, else to a new run of the `mnist` experiment.
    """
    from mlflow.exceptions import MlflowException

    check_name(name, f"name={name}")
    check_alias(alias, f"alias={alias}", to_set=True)
    mlflow_client = client(outputs_root)
    sha256 = lineage.sha256sum(checkpoint)
    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        mlflow_client.create_registered_model(name, description="MNIST digit classifiers trained by mnist_lightning")
    existing = mlflow_client.search_model_versions(f"name='{name}' and tag.checkpoint_sha256='{sha256}'")
    created = not existing
    if existing:
        version = existing[0]
    else:
        run_id = _run_for(mlflow_client, outputs_root, mlflow_run_id, tags)
        with tempfile.TemporaryDirectory() as scratch:
            stage = Path(scratch)
            shutil.copy2(checkpoint, stage / CHECKPOINT_NAME)
            if export_dir is not None:
                shutil.copytree(export_dir, stage / "export")
            if run_dir is not None and (run_dir / ".hydra" / "config.yaml").is_file():
                shutil.copy2(run_dir / ".hydra" / "config.yaml", stage / "config.yaml")
            if run_dir is not None and (run_dir / layout.METRICS_FILE).is_file():  # what serve's /model shows
                shutil.copy2(run_dir / layout.METRICS_FILE, stage / layout.METRICS_FILE)
            folder = f"{ARTIFACT_PATH}/{sha256[:12]}"
            mlflow_client.log_artifacts(run_id, str(stage), artifact_path=folder)
        source = f"{mlflow_client.get_run(run_id).info.artifact_uri}/{folder}"
        version_tags = {k: str(v)[:TAG_VALUE_LIMIT] for k, v in tags.items()} | {"checkpoint_sha256": sha256}
        version = mlflow_client.create_model_version(name, source, run_id=run_id, tags=version_tags)
    mlflow_client.set_registered_model_alias(name, alias, version.version)
    return {
        "name": name,
        "version": int(version.version),
        "created": created,
        "alias": alias,
        "model_version": sha256[:12],
        "source": version.source,
    }


def _run_for(mlflow_client, outputs_root, mlflow_run_id: str | None, tags: dict[str, str]) -> str:
    """The training run's MLflow run when it is in this store, else a new run carrying the metrics and tags."""
    from mlflow.exceptions import MlflowException

    if mlflow_run_id:
        try:
            return mlflow_client.get_run(mlflow_run_id).info.run_id
        except MlflowException:
            pass
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow_client.create_experiment(EXPERIMENT, artifact_location=artifact_location(outputs_root))
    )
    run = mlflow_client.create_run(experiment_id, run_name=f"register {tags.get('model_version', '')}".strip())
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                mlflow_client.log_metric(run.info.run_id, key.removeprefix("metric."), float(value))
            except (TypeError, ValueError):
                pass
        else:
            mlflow_client.set_tag(run.info.run_id, key, str(value)[:TAG_VALUE_LIMIT])
    mlflow_client.set_terminated(run.info.run_id)
    return run.info.run_id
