"""rlhf.config.reference and rlhf.cli.reference: the committed docs/reference pages are exactly what the dataclasses render."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, get_type_hints

import pytest

from rlhf.cli.reference import DEFAULT_OUT, PAGES, main
from rlhf.config.loader import param
from rlhf.config.reference import HEADER, _load, reference_markdown, render_pages, stale_files, write_reference

REFERENCE = Path(__file__).resolve().parents[4] / "docs" / "reference"
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Inner:
    """Inner section."""

    size: int = param(3, "How many.")
    names: list[str] = param(default_factory=lambda: ["a"], doc="Names.")


@dataclass(frozen=True)
class Tiny:
    """A tiny config.

    Second paragraph.
    """

    path: str = param(doc="Where to write.")
    mode: Literal["x", "y"] = param("x", "Either x | y, never both.")
    limit: Optional[float] = param(None, "Upper bound; `null` = none.")
    inner: Inner = param(default_factory=Inner, doc="Inner.")


TINY_EXPECTED = """\
# Tiny keys

Generated from the config dataclasses by `python -m rlhf.cli.reference`; do not edit by hand.

A tiny config.

Second paragraph.

## Top-level keys

| key | type | default | meaning |
| --- | --- | --- | --- |
| `path` | `str` | required | Where to write. |
| `mode` | `'x' \\| 'y'` | `'x'` | Either x \\| y, never both. |
| `limit` | `float \\| None` | `None` | Upper bound; `null` = none. |

## `inner`

Inner section.

| key | type | default | meaning |
| --- | --- | --- | --- |
| `inner.size` | `int` | `3` | How many. |
| `inner.names` | `list[str]` | `['a']` | Names. |
"""


def _keys(cls: type, prefix: str = "") -> list[str]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _table_rows(text: str) -> list[list[str]]:
    return [UNESCAPED_PIPE.split(line)[1:-1] for line in text.splitlines() if line.startswith("|")]


def test_committed_pages_match_the_dataclasses():
    assert DEFAULT_OUT == REFERENCE
    for filename, text in render_pages(PAGES).items():
        path = REFERENCE / filename
        assert path.is_file(), f"{path} is missing; run `python -m rlhf.cli.reference`"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale (a config field or its doc changed); run `python -m rlhf.cli.reference`"
        )
    assert stale_files(PAGES, REFERENCE) == []


def test_registry_covers_every_stage():
    from rlhf.stages.registry import STAGES

    assert [name for name, _ in PAGES[: len(STAGES)]] == list(STAGES)


@pytest.mark.parametrize("name,target", PAGES, ids=[name for name, _ in PAGES])
def test_every_field_appears_in_its_page(name, target):
    text = render_pages([(name, target)])[f"{name}.md"]
    cls = _load(target)
    rows = {row[0].strip() for row in _table_rows(text)}
    for key in _keys(cls):
        assert f"`{key}`" in rows, f"{key} missing from the {name} page"
    for row in _table_rows(text):
        assert len(row) == 4, row


def test_pipe_in_a_doc_keeps_the_table_intact():
    text = reference_markdown(Tiny, "Tiny keys")
    rows = _table_rows(text)
    mode = next(row for row in rows if row[0].strip() == "`mode`")
    assert len(mode) == 4
    assert mode[3].strip() == "Either x \\| y, never both."
    assert all(len(row) == 4 for row in rows)


def test_tiny_dataclass_renders_exactly():
    assert reference_markdown(Tiny, "Tiny keys") == TINY_EXPECTED


def test_check_names_stale_files_and_write_fixes_them(tmp_path, capsys):
    assert main(["--check", "--out", str(tmp_path)]) == 1
    assert "sft.md (missing)" in capsys.readouterr().err
    written = write_reference(PAGES, tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{name}.md" for name, _ in PAGES)
    assert main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "sft.md").write_text("# edited by hand\n", encoding="utf-8")
    (tmp_path / "gone.md").write_text(f"# old\n\n{HEADER}\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("hand-written, not generated\n", encoding="utf-8")
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "python -m rlhf.cli.reference" in err and "sft.md (differs)" in err and "gone.md" in err
    assert "notes.md" not in err
    write_reference(PAGES, tmp_path)
    assert not (tmp_path / "gone.md").exists() and (tmp_path / "notes.md").exists()
    assert main(["--check", "--out", str(tmp_path)]) == 0
