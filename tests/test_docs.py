"""Every relative link in README.md and docs/*.md resolves: to a file that exists and, for `#fragment`, to a
heading of the target markdown file under GitHub's slug rules. Links inside code are not links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)(?:\s+#+)?\s*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def slug(heading: str) -> str:
    """GitHub's anchor: a link's text only, lowercase, punctuation dropped (not - or _), spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)  # repeated headings get -1, -2, ...
        seen[base] = seen.get(base, 0) + 1
    return found


def broken_links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    broken = []
    for target in LINK.findall(text):
        if SCHEME.match(target):
            continue  # http:, https:, mailto: are not checked here
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (fragment and (resolved.suffix != ".md" or fragment not in anchors(resolved))):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}: links to nothing"


def test_a_broken_link_is_reported(tmp_path: Path):
    (tmp_path / "a.md").write_text(
        "# Time to 99%: the recipes tried\n\n## Lifecycle: A/B, `drift`\n\n"
        "[ok](#time-to-99-the-recipes-tried) [ok](a.md#lifecycle-ab-drift) [web](https://example.org/x)\n"
        "[gone](b.md) [no heading](a.md#nope) `[code](c.md)`\n\n```\n[fenced](d.md)\n```\n"
    )
    assert broken_links(tmp_path / "a.md") == ["b.md", "a.md#nope"]
