"""Command-line overrides (`key=value`): read with Hydra's own parser, written with its quoting rules.

Paths with spaces, commas, quotes or `${` stay one literal value when passed through `quote`.
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Quote, QuotedString


def parse(overrides: list[str]) -> list[Override]:
    """Parsed overrides; raises Hydra's OverrideParseException for a malformed one."""
    return OverridesParser.create().parse_overrides(list(overrides))


def by_key(overrides: list[str]) -> dict[str, str]:
    """{key: the override as written} (for `+key=...` and `~key` too), later ones winning."""
    return {o.key_or_group: o.input_line for o in parse(overrides)}


def value_of(override: str) -> str | None:
    """The value of one `key=value` override as a plain string (quotes removed), None for `key=null`."""
    value = parse([override])[0].value()
    return None if value is None else str(value)


def quote(value: object) -> str:
    """`value` as one quoted override value, taken literally by Hydra and OmegaConf."""
    return QuotedString(text=str(value).replace("${", "\\${"), quote=Quote.single).with_quotes()


def assign(key: str, value: object) -> str:
    """`key=value`, quoted unless Hydra reads the bare value back as the same string."""
    text, bare = str(value), f"{key}={value}"
    try:
        if "${" not in text and parse([bare])[0].value() == text:
            return bare
    except Exception:  # the grammar rejects it bare: quote it
        pass
    return f"{key}={quote(text)}"
