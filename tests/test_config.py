"""Every config option composes and builds; bad settings stop before training with one clear message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import open_dict

from benchmarks.parsers import epoch_profile
from helpers import CONF_DIR, run_cli
from mnist_lightning.cli.build import build, build_each, build_trainer
from mnist_lightning.cli.keys import known_keys
from mnist_lightning.errors import UserError

GROUPS = {group.name: sorted(p.stem for p in group.glob("*.yaml")) for group in CONF_DIR.iterdir() if group.is_dir()}


def compose_train(overrides: list[str], run_dir: Path):
    """The config `python -m mnist_lightning.train` would get, with this run folder."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(run_dir.parent)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_groups_named_in_the_layout_exist():
    for group in (
        "data",
        "model",
        "optimizer",
        "scheduler",
        "trainer",
        "callbacks",
        "logger",
        "paths",
        "hydra",
        "experiment",
        "debug",
    ):
        assert GROUPS.get(group), f"conf/{group}/ is missing"
    assert {"cnn", "bn_cnn", "mlp"} <= set(GROUPS["model"])
    assert {"default", "cpu", "gpu", "ddp", "ddp_cpu"} <= set(GROUPS["trainer"])
    assert {"adam", "adamw", "sgd"} <= set(GROUPS["optimizer"])
    assert {"onecycle", "cosine", "step", "none"} <= set(GROUPS["scheduler"])
    assert {"tensorboard", "csv", "none"} <= set(GROUPS["logger"])
    assert {"fast_dev_run", "limit", "overfit"} <= set(GROUPS["debug"])


OPTIONS = [(g, o) for g, options in GROUPS.items() if g not in ("hydra", "paths") for o in options]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option, tmp_path, mnist_dir):
    cfg = compose_train([f"{group}={option}", f"paths.data_dir={mnist_dir}"], tmp_path / "run")
    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    callbacks = build_each(cfg.get("callbacks"), "callbacks")
    loggers = build_each(cfg.get("logger"), "logger")
    assert datamodule.batch_size > 0 and isinstance(model.net, torch.nn.Module)
    assert all(isinstance(c, Callback) for c in callbacks), callbacks
    assert all(isinstance(logger, Logger) for logger in loggers), loggers
    assert len(callbacks) == sum(1 for n in (cfg.get("callbacks") or {}).values() if n is not None)
    assert len(loggers) == sum(1 for n in (cfg.get("logger") or {}).values() if n is not None)
    # the typo check reads conf/ without composing: it must know every key a composition holds
    assert {k for k in flat_keys(cfg) if not k.startswith("hydra")} - known_keys("train") == set()
    if cfg.trainer.accelerator in ("auto", "cpu"):  # gpu and ddp need a GPU to build
        import lightning.pytorch as pl

        trainer = build_trainer(cfg.trainer, datamodule=datamodule, callbacks=callbacks, logger=loggers or False)
        assert isinstance(trainer, pl.Trainer)


def test_the_seed_settings_are_one_override_each(tmp_path):
    cfg = compose_train(
        ["data.batch_size=128", "model.optimizer.lr=0.01", "trainer.max_epochs=3", "trainer.accelerator=cpu"],
        tmp_path / "run",
    )
    assert (cfg.data.batch_size, cfg.model.optimizer.lr, cfg.trainer.max_epochs, cfg.trainer.accelerator) == (
        128,
        0.01,
        3,
        "cpu",
    )


def test_schedulers_get_their_length_from_the_trainer(tmp_path, mnist_dir):
    import lightning.pytorch as pl

    for option, expected in (("onecycle", "OneCycleLR"), ("cosine", "CosineAnnealingLR"), ("step", "StepLR")):
        cfg = compose_train(
            [
                f"scheduler={option}",
                "trainer.max_epochs=2",
                "trainer.limit_train_batches=3",
                f"paths.data_dir={mnist_dir}",
            ],
            tmp_path / option,
        )
        model, datamodule = build(cfg.model, "model"), build(cfg.data, "data")
        trainer = pl.Trainer(
            max_epochs=2,
            limit_train_batches=3,
            logger=False,
            enable_checkpointing=False,
            use_distributed_sampler=False,
            enable_progress_bar=False,
            limit_val_batches=0,
        )
        trainer.fit(model, datamodule=datamodule)
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        assert type(scheduler).__name__ == expected
        if option == "onecycle":
            assert scheduler.total_steps == 6
        if option == "cosine":
            assert scheduler.T_max == 6


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
        ("model.optimizer.lr=-0.1", "model.optimizer: Invalid learning rate: -0.1"),
        ("model.optimizer.lr=abc", "model.optimizer.lr='abc': must be a number"),
        ("seed=abc", "seed='abc': must be a whole number"),
        ("seed=-5", "seed=-5: must be between 0 and 4294967295"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': must be a whole number"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5: must be a whole number"),
        ("trainer.limit_train_batches=abc", "trainer.limit_train_batches='abc': must be a number"),
        ("trainer.limit_val_batches=-1", "trainer.limit_val_batches=-1: must be at least 0"),
        ("data.val_size=70000", "data.val_size=70000 leaves no training images"),
        ("model.label_smoothing=1.5", "model.label_smoothing=1.5: must be at least 0 and below 1"),
        ("trainer.profiler=simpel", "trainer.profiler='simpel': choose one of simple, advanced, pytorch"),
        ("ckpt_path=missing.ckpt", "ckpt_path=missing.ckpt: no such file"),
        ("ckpt_path=last", "ckpt_path=last: no single run under"),
        (
            "optimized_metric=val/acc_bst",
            "optimized_metric=val/acc_bst: the model logs no such metric; choose one of "
            "train/loss, train/acc, val/loss, val/acc, val/acc_best, test/loss, test/acc",
        ),
    ],
)
def test_bad_settings_stop_before_training_naming_the_key(override, message, tmp_path, mnist_dir):
    from mnist_lightning.train import train

    cfg = compose_train([override, f"paths.data_dir={mnist_dir}"], tmp_path / "run")
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_cli_prints_one_line_and_no_traceback_for_a_bad_override(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.train", "data.batch_size=0", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2
    assert "data.batch_size=0: must be an integer >= 1" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_cli_unknown_group_option_lists_the_choices(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.train", "model=resnet", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert result.returncode != 0
    assert "Could not find 'model/resnet'" in result.stderr and "mlp" in result.stderr
    assert "Traceback" not in result.stderr


def test_ddp_leaves_our_sharded_batches_alone_and_gives_other_datamodules_a_distributed_sampler(tmp_path, mnist_dir):
    """The decision belongs to the datamodule: ours shards by rank itself, a standard one needs Lightning's sampler."""
    import lightning.pytorch as pl

    cfg = compose_train(["trainer=ddp_cpu", f"paths.data_dir={mnist_dir}"], tmp_path / "run")
    assert "use_distributed_sampler" not in cfg.trainer
    ours = build(cfg.data, "data")

    class StandardDataModule(pl.LightningDataModule):
        pass

    for datamodule, expected in ((ours, False), (StandardDataModule(), True)):
        trainer = build_trainer(cfg.trainer, datamodule=datamodule, logger=False)
        assert trainer._accelerator_connector.use_distributed_sampler is expected, type(datamodule).__name__


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into another run folder on purpose
def test_every_checkpoint_the_trainer_loads_is_loaded_weights_only(tmp_path, mnist_dir, monkeypatch):
    """Resume (fit) and the final test both load checkpoints; torch's own default for weights_only differs between
    the versions this project allows, so each load must ask for it."""
    from mnist_lightning.train import train

    tiny = [
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "logger=none",
        "scheduler=none",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "callbacks.model_checkpoint.save_top_k=-1",
        f"paths.data_dir={mnist_dir}",
    ]
    loads = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    first = train(compose_train(tiny, tmp_path / "first"))
    (epoch_0,) = (tmp_path / "first" / "checkpoints").glob("epoch_00-*.ckpt")
    resumed = train(compose_train([*tiny, f"ckpt_path={epoch_0}"], tmp_path / "resumed"))
    assert first["state"] == resumed["state"] == "finished" and resumed["global_step"] == 6
    assert len(loads) >= 3 and all(flag is True for flag in loads), loads


def test_the_simple_profiler_reports_into_the_run_folder(tmp_path, mnist_dir):
    from mnist_lightning.train import train

    limits = ["trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=2"]
    limits += ["trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "logger=none"]
    limits += ["trainer.num_sanity_val_steps=0"]  # their validation would fall outside the profiled epoch
    cfg = compose_train(["trainer.profiler=simple", f"paths.data_dir={mnist_dir}", *limits], tmp_path / "run")
    metrics = train(cfg)
    report = (tmp_path / "run" / "profile" / "fit-profile.txt").read_text()
    assert "run_training_epoch" in report and "run_training_batch" in report, report[:2000]
    # the benchmark's reader of this report: every share of the epoch found and none negative
    shares = epoch_profile(tmp_path / "run" / "profile" / "fit-profile.txt")
    assert shares["epoch_s"] > 0 and min(shares.values()) >= 0, shares
    assert 99 <= sum(v for k, v in shares.items() if k.endswith("_pct")) <= 101, shares
    assert metrics["setup_s"] > 0 and metrics["first_step_at"] > 0


def flat_keys(node, prefix: str = "") -> set[str]:
    from omegaconf import DictConfig

    keys = set()
    for key in node.keys() if isinstance(node, DictConfig) else ():
        dotted = f"{prefix}{key}"
        keys |= {dotted} | flat_keys(node._get_node(key), f"{dotted}.")
    return keys


@pytest.mark.parametrize("verb", ["evaluate", "predict", "serve", "export", "register", "summarize"])
def test_the_key_check_knows_every_key_of_the_other_verbs(verb):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(verb)
    assert flat_keys(cfg) - known_keys(verb) == set()


def test_a_typo_in_a_key_is_refused_with_the_nearest_key(tmp_path, mnist_dir):
    from mnist_lightning.cli.keys import check_known

    with pytest.raises(UserError, match=r"data\.batchsize=32: no config has the key data\.batchsize; did you mean "):
        check_known("train", ["data.batchsize=32"])
    with pytest.raises(UserError, match=r"limits\.max_batch=3: no config has the key") as refused:
        check_known("evaluate", ["limits.max_batch=3"])  # a key of serve, not of evaluate
    # outside train, a +key would be accepted and ignored: not suggested
    assert "did you mean" not in str(refused.value) and "+limits.max_batch" not in str(refused.value)
    with pytest.raises(UserError, match=r"dri=x: no config has the key dri; did you mean dir=x\?"):
        check_known("summarize", ["dri=x"])  # a short key's nearest one is a few letters away
    check_known("train", ["+trainer.val_check_interval=0.5", "~callbacks.lr_monitor", "hydra.job.chdir=false"])
    check_known("train", ["hydra/launcher=joblib", "hydra/sweeper=mnist_optuna", "hydra/job_logging=disabled"])
    check_known("train", ["model=mlp", "model.net.hidden=[32]", "data.batch_size=16,32", "experiment=fast"])
    result = run_cli("mnist_lightning.train", "data.batchsize=32", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2 and "did you mean data.batch_size=32?" in result.stderr, result.stderr
    assert "+data.batchsize" not in result.stderr.split("?")[0] and not (tmp_path / "outputs").exists()


def test_a_value_hydras_grammar_refuses_gets_one_line_with_a_form_it_reads():
    from mnist_lightning.cli import overrides
    from mnist_lightning.cli.keys import check_known

    # what the shell passes for register name="a'b": Hydra's own error named its lexer, with exit status 1
    with pytest.raises(UserError) as refused:
        check_known("register", ["name=a'b"])
    message = str(refused.value)
    suggested = "name='a\\'b'"  # as Hydra reads it; the message shows it inside the shell's double quotes
    assert message.startswith("name=a'b: Hydra cannot read this value") and message.endswith(f'"{suggested}"')
    assert overrides.value_of(suggested) == "a'b"  # the suggested form is read back as the value meant
    with pytest.raises(UserError, match=r"model_ref=registry:x\]: Hydra cannot read"):
        check_known("evaluate", ["model_ref=registry:x]"])
    with pytest.raises(UserError) as secret:
        check_known("serve", ["auth.token=s3cret'value"])
    assert str(secret.value).startswith("auth.token=<hidden>: Hydra cannot read") and "s3cret" not in str(secret.value)


def test_secrets_in_a_config_are_hidden_from_the_loggers():
    from mnist_lightning.cli.recipe import without_secrets

    params = {"store": {"url": "postgresql+psycopg://mnist:s3cret@db/log"}, "auth": {"token": None}, "lr": 0.1}
    params["runs"] = [{"salt": "abc"}]
    assert without_secrets(params) == {
        "store": {"url": "<hidden>"},
        "auth": {"token": None},
        "lr": 0.1,
        "runs": [{"salt": "<hidden>"}],
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"holdout": 1.5}, "retrain.holdout=1.5: must be a share from 0"),
        ({"max_mnist_drop": "abc"}, "retrain.max_mnist_drop=abc: must be a number of points"),
        ({"min_feedback": 2.5}, "retrain.min_feedback=2.5: must be a whole number >= 1"),
        ({"min_feedback": 0}, "retrain.min_feedback=0: must be a whole number >= 1"),
        ({"trusted_labels_only": 3}, "retrain.trusted_labels_only=3: must be true or false"),
    ],
)
def test_retrain_settings_are_checked_before_anything_is_loaded(given, message):
    from omegaconf import OmegaConf

    from mnist_lightning.retrain import checked_settings

    node = OmegaConf.merge(OmegaConf.load(CONF_DIR / "retrain.yaml").retrain, given)
    with pytest.raises(UserError, match=re.escape(message)):
        checked_settings(node)
    assert checked_settings(OmegaConf.load(CONF_DIR / "retrain.yaml").retrain) == {
        "min_feedback": 200,
        "holdout": 0.2,
        "max_mnist_drop": 0.5,
        "trusted_labels_only": False,
    }


def test_promote_checks_its_test_by_serves_rules_before_opening_anything():
    from omegaconf import OmegaConf

    from mnist_lightning.promote import checked_test

    ab = OmegaConf.load(CONF_DIR / "promote.yaml").ab
    served = OmegaConf.load(CONF_DIR / "serve.yaml").ab
    assert checked_test(ab) == (0.05, 100) == (served.alpha, served.first_look)  # the same test as GET /ab
    with pytest.raises(UserError, match=re.escape("ab.alpha=2: input should be less than 1")):
        checked_test(OmegaConf.merge(ab, {"alpha": 2}))
    with pytest.raises(UserError, match=re.escape("ab.first_look=5: input should be greater than or equal to 10")):
        checked_test(OmegaConf.merge(ab, {"first_look": 5}))


@pytest.mark.parametrize(
    ("verb", "override", "message"),
    [
        ("evaluate", "n_bins=0", "n_bins=0: must be at least 1"),
        ("evaluate", "misclassified=abc", "misclassified='abc': must be a whole number"),
        ("predict", "max_pixels=abc", "max_pixels='abc': must be a whole number"),
        ("export", "output_dir=FILE", "a file, not a folder; give a folder to write the export into"),
    ],
)
def test_a_verbs_own_bad_setting_is_refused_before_the_model_is_loaded(verb, override, message, tmp_path, monkeypatch):
    """In one line naming the key: evaluate n_bins=0 used to fail after the whole evaluation, predict max_pixels=abc
    and export output_dir=<a file> with tracebacks."""
    import importlib

    from helpers import ROOT, tiny_run

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    checkpoint = tiny_run(tmp_path / "run", seed=0)
    overrides = [override.replace("FILE", str(a_file)), f"ckpt_path={checkpoint}"]
    if verb == "predict":
        overrides.append(f"image={ROOT / 'examples' / '1_paper.jpg'}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(verb, overrides)
    from mnist_lightning.inference.model import LoadedModel

    def not_yet(*args, **kwargs):
        raise AssertionError("the model was loaded before the setting was checked")

    monkeypatch.setattr(LoadedModel, "load", not_yet)
    with pytest.raises(UserError, match=re.escape(message)) as refused:
        getattr(importlib.import_module(f"mnist_lightning.{verb}"), verb)(cfg)
    assert "\n" not in str(refused.value)
