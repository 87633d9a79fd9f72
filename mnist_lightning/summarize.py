"""Compare runs: `python -m mnist_lightning.summarize [DIR]` (`make summary`).

One row per training run under DIR (a sweep folder, or all of outputs/): the overrides that differ
between the runs, best val acc, test acc, epochs, wall time and state, best first. Runs that differ
only in `seed` are also aggregated as mean ± std. Written as summary.csv and summary.md in DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = "usage: python -m mnist_lightning.summarize [DIR | dir=DIR] [paths.outputs_root=DIR]"


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mnist_lightning.cli.overrides import assign
    from mnist_lightning.runs.summary import markdown, summarize

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.splitlines()[0] + "\n" + USAGE)
        return 0
    overrides = [a if "=" in a else assign("dir", a) for a in args]  # a bare path is the folder to summarise
    GlobalHydra.instance().clear()  # composing twice in one process (tests, notebooks) needs a fresh start
    try:
        with initialize_config_module("mnist_lightning.conf", version_base="1.3"):
            root = Path(compose("summarize", overrides=overrides).dir)
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"error: {' '.join(str(exc).split())}\n{USAGE}", file=sys.stderr)
        return 2
    if not root.is_dir():
        print(f"error: {root} is not a folder; give a sweep folder or outputs/", file=sys.stderr)
        return 2
    rows, groups = summarize(root)
    if not rows:
        print(f"error: no training runs under {root}; run `make train` or a sweep first", file=sys.stderr)
        return 2
    print(markdown(rows, groups), end="")
    print(f"\n{len(rows)} runs; written to {root / 'summary.csv'} and {root / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
