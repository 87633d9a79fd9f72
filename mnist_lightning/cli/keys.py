"""A `key=value` override of a key no config has: one line that names the nearest existing key, before Hydra's
advice to add it with `+key=value` (which would then fail where the key is a typo).

The keys are read from the YAML files of conf/ (every option of every group, where its `# @package` puts it),
without composing: a superset of what any composition holds, so a key that exists is never refused, and cheap
enough for every launch."""

from __future__ import annotations

import difflib
import functools
import re
from importlib import resources

import yaml

from mnist_lightning.cli import overrides
from mnist_lightning.errors import UserError

PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.M)
SECRET_KEYS = ("token", "salt", "url")  # their values are not repeated in a message (a URL may hold a password)


@functools.cache
def known_keys(config_name: str) -> frozenset[str]:
    """Every dotted key (and every group name) that conf/<config_name>.yaml or any group option can put into a
    composed config."""
    keys: set[str] = set()
    conf = resources.files("mnist_lightning.conf")
    for entry in conf.iterdir():
        if entry.name == f"{config_name}.yaml":
            _add(keys, "", entry.read_text())
        elif entry.is_dir() and not entry.name.startswith(("_", ".")) and entry.name != "hydra":
            keys.add(entry.name)
            for option in entry.iterdir():
                if option.name.endswith(".yaml"):
                    text = option.read_text()
                    package = PACKAGE.search(text)
                    where = package.group(1) if package else entry.name
                    _add(keys, "" if where == "_global_" else where, text)
    return frozenset(keys)


def _add(keys: set[str], prefix: str, text: str) -> None:
    node = yaml.safe_load(text) or {}
    if prefix:
        keys.update(".".join(prefix.split(".")[: i + 1]) for i in range(prefix.count(".") + 1))
    stack = [(prefix, node)]
    while stack:
        path, value = stack.pop()
        if not isinstance(value, dict):
            continue
        for key, child in value.items():
            if path == prefix and key == "defaults":
                continue
            dotted = f"{path}.{key}" if path else str(key)
            keys.add(dotted)
            stack.append((dotted, child))


def check_known(config_name: str, argv: list[str]) -> None:
    """Refuse, in one line, an override that sets a key no config has (`+key=`, `++key=`, `~key`, `hydra.*` and
    Hydra's own groups such as `hydra/launcher=joblib` are left to Hydra)."""
    plain = [a for a in argv if "=" in a and not a.startswith(("+", "~", "-", "hydra.", "hydra/"))]
    parsed = []
    for item in plain:
        try:
            parsed += overrides.parse([item])
        except Exception:  # Hydra's grammar refuses it (an unclosed quote, a stray bracket): say how to write it
            key, _, value = item.partition("=")
            if key.rsplit(".", 1)[-1] in SECRET_KEYS:  # never echoed: set it through the environment instead
                raise UserError(
                    f"{key}=<hidden>: Hydra cannot read this value; give it through the environment"
                ) from None
            written = f"{key}={overrides.quote(value)}"
            # as typed in a shell: inside double quotes, unless the value needs them itself
            shown = written if any(c in written for c in '"$`') else f'"{written}"'
            raise UserError(
                f"{item}: Hydra cannot read this value (quotes, brackets and commas are part of its "
                f"grammar); quote it for Hydra too, e.g. {shown}"
            ) from None
    if not parsed:
        return  # nothing to check: the config files are not even read
    known = known_keys(config_name)
    for override in parsed:
        key = override.key_or_group
        if key in known:
            continue
        value = override.input_line.split("=", 1)[1]
        # short keys are a few letters apart however close they are (dri and dir: 0.67)
        nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.8 if len(key) > 5 else 0.6)
        hint = f"did you mean {nearest[0]}={value}? " if nearest else ""
        # only training passes keys on to code that takes more than the config lists (Lightning's Trainer)
        adding = f" (to add a new key on purpose, e.g. a Trainer argument the config does not list: +{key}={value})"
        raise UserError(
            f"{override.input_line}: no config has the key {key}; {hint}`--cfg job` lists the settings"
            f"{adding if config_name == 'train' else ''}"
        )
