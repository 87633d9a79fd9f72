"""Promote the A/B candidate: `python -m mnist_lightning.promote` (`make promote`, `mnist-promote`).

Reads the labelled answers of the champion and the challenger from the prediction log (serve's store.url), takes
the same decision as GET /ab (serving/decision.py), and moves the champion alias to the challenger only when the
verdict is `candidate better`; otherwise one line with the figures, and nothing changes (`force=true` overrides,
and says so). The decision (verdict, figures, time, the version replaced) is recorded as tags on the version.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from omegaconf import DictConfig

from mnist_lightning.cli.task import verb
from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def promote(cfg: DictConfig) -> dict:
    from mnist_lightning.runs import registry
    from mnist_lightning.serving.ab import experiment_name
    from mnist_lightning.serving.decision import decide
    from mnist_lightning.store.log import PredictionLog

    root = cfg.paths.outputs_root
    alpha, first_look = checked_test(cfg.ab)  # before the registry or the log is opened
    candidate_alias = registry.check_alias(str(cfg.candidate), f"candidate={cfg.candidate}")
    alias = registry.check_alias(str(cfg.alias), f"alias={cfg.alias}", to_set=True)
    name = registry.with_alias(candidate_alias, root) if cfg.name in (None, "") else str(cfg.name)
    challenger = registry.find_version(f"{registry.PREFIX}{name}@{candidate_alias}", root)
    champion = registry.find_version(f"{registry.PREFIX}{name}@{alias}", root)
    if challenger.version == champion.version:
        raise UserError(f"{name} v{challenger.version} is {alias} and {candidate_alias} already: nothing to promote")
    versions = {
        role: (found.tags or {}).get("model_version") for role, found in (("main", champion), ("candidate", challenger))
    }
    prediction_log = PredictionLog(cfg.store.url, create=False)
    experiment = experiment_name(versions["main"], versions["candidate"])  # the A/B test serve ran between them
    try:
        decision = decide(
            prediction_log.outcomes(versions["main"], experiment),
            prediction_log.outcomes(versions["candidate"], experiment),
            alpha,
            first_look,
        )
    finally:
        prediction_log.close()
    figures = summary(decision)
    if decision["verdict"] != "candidate better" and not cfg.force:
        more = decision["more_labels_per_arm"]
        advice = f"about {more} more labels per arm may decide it; " if more else ""
        raise UserError(
            f"not promoted: {name} v{challenger.version} ({candidate_alias}) against v{champion.version} ({alias}) "
            f"is {decision['verdict']}: {figures}; {advice}force=true promotes it anyway"
        )
    record = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "replaced_version": champion.version,
        "replaced_model_version": versions["main"],
        "model_version": versions["candidate"],
        "verdict": decision["verdict"],
        "forced": bool(cfg.force and decision["verdict"] != "candidate better"),
        "decision": decision,
    }
    registry.move_alias(name, alias, challenger.version, {"promotion": json.dumps(record)}, root)
    forced = " (forced: the verdict alone would not promote it)" if record["forced"] else ""
    log.info(
        "\nSummary\n  promoted        %s v%s (model %s) to %s%s\n  replaced        v%s (model %s)\n"
        "  decision        %s: %s\n  use it with     model_ref=registry:%s@%s",
        name,
        challenger.version,
        versions["candidate"],
        alias,
        forced,
        champion.version,
        versions["main"],
        decision["verdict"],
        figures,
        name,
        alias,
    )
    return record


def checked_test(ab: DictConfig) -> tuple[float, int]:
    """ab.alpha and ab.first_look, checked by the rules serve checks them by (serving/settings.py's AB)."""
    from pydantic import ValidationError

    from mnist_lightning.serving.settings import AB

    given = {"alpha": ab.alpha, "first_look": ab.first_look}
    try:
        test = AB.model_validate(given)
    except ValidationError as exc:
        raise UserError(
            "; ".join(f"ab.{error['loc'][0]}={error['input']}: {error['msg'].lower()}" for error in exc.errors())
        ) from None
    return test.alpha, test.first_look


def summary(decision: dict) -> str:
    """The decision's figures in one phrase."""
    labels, accuracy = decision["labels"], decision["accuracy"]
    if decision["difference"] is None:
        return f"labels main {labels['main']}, candidate {labels['candidate']}: not enough to compare"
    low, high = decision["interval"]
    where = f"at look {decision['look']}" if decision["look"] else "so far"
    return (
        f"{where}, accuracy {accuracy['candidate']:.4f} vs {accuracy['main']:.4f} on {labels['candidate']} and "
        f"{labels['main']} labels, difference {decision['difference']:+.4f} "
        f"({decision['confidence']:.2%} interval {low:+.4f} to {high:+.4f}), p={decision['p_value']:.2g}"
    )


@verb("promote")
def main(cfg: DictConfig) -> None:
    promote(cfg)


if __name__ == "__main__":
    main()
