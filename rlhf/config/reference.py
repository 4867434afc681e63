"""Markdown key reference generated from the config dataclasses (docs/reference/*.md).

The pages are rendered from the same ``param(default, doc)`` declarations that ``--help-config``
prints, so they cannot drift from the code; a test compares the committed pages with a fresh
rendering.

    python -m rlhf.cli.reference            # rewrite docs/reference/
    python -m rlhf.cli.reference --check    # exit 1 and name the stale files if they differ

This module renders and compares pages; the list of pages (every stage's config, from the stage
registry, plus the pipeline and sweep configs) and the command live in ``rlhf.cli.reference``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from dataclasses import MISSING
from pathlib import Path
from typing import Any, get_type_hints

from rlhf.config.loader import _type_name

HEADER = "Generated from the config dataclasses by `python -m rlhf.cli.reference`; do not edit by hand."
# (page name, "module:Class"): one <name>.md each
Pages = list[tuple[str, str]]


def _docstring(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    # @dataclass writes "Name(field: type = ...)" into a class that has no docstring of its own.
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return inspect.cleandoc(doc)


def _cell(text: str) -> str:
    """One table cell: on one line, with `|` escaped (GFM honours the escape inside code spans too)."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    """``text`` as a code span whose fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _default(field: dataclasses.Field) -> str:
    if field.default is not MISSING:
        return _code(repr(field.default))
    if field.default_factory is not MISSING:
        return _code(repr(field.default_factory()))
    return "required"


def _sections(cls: type, prefix: str = "") -> list[tuple[str, type, list[tuple[str, Any, dataclasses.Field]]]]:
    """(dotted name, class, [(dotted key, type, field) of its plain keys]) for ``cls`` and every
    nested section, depth first in declaration order."""
    hints = get_type_hints(cls)
    keys, nested = [], []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        key, tp = f"{prefix}{field.name}", hints[field.name]
        if dataclasses.is_dataclass(tp):
            nested.extend(_sections(tp, f"{key}."))
        else:
            keys.append((key, tp, field))
    return [(prefix.rstrip("."), cls, keys), *nested]


def reference_markdown(cls: type, title: str) -> str:
    """The markdown reference page of the config dataclass ``cls``."""
    out = [f"# {title}", "", HEADER, ""]
    intro = _docstring(cls)
    if intro:
        out += [intro, ""]
    for name, section, keys in _sections(cls):
        if not name and not keys:
            continue
        out += [f"## `{name}`" if name else "## Top-level keys", ""]
        about = _docstring(section) if name else ""
        if about:
            out += [about, ""]
        if not keys:
            continue
        out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for key, tp, field in keys:
            cells = [_code(key), _code(_type_name(tp)), _default(field), field.metadata.get("doc", "")]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _load(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def render_pages(pages: Pages) -> dict[str, str]:
    """File name -> page text for every config in ``pages``."""
    rendered = {}
    for name, target in pages:
        cls = _load(target)
        rendered[f"{name}.md"] = reference_markdown(cls, f"`{name}` configuration keys ({cls.__name__})")
    return rendered


def write_reference(pages: Pages, out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/<name>.md`` for every entry of ``pages`` (and remove generated pages of
    configs no longer listed); returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_pages(pages)
    for orphan in _orphans(out_dir, rendered):
        orphan.unlink()
    written = []
    for filename, text in rendered.items():
        path = out_dir / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _orphans(out_dir: Path, pages: dict[str, str]) -> list[Path]:
    """Generated pages (they carry the header) whose config is no longer registered."""
    if not out_dir.is_dir():
        return []
    return [p for p in sorted(out_dir.glob("*.md")) if p.name not in pages and HEADER in p.read_text(encoding="utf-8")]


def stale_files(pages: Pages, out_dir: str | Path) -> list[str]:
    """Pages in ``out_dir`` that are missing, differ from a fresh rendering, or were generated for a
    config that is no longer listed."""
    out_dir = Path(out_dir)
    expected = render_pages(pages)
    stale = []
    for filename, text in expected.items():
        path = out_dir / filename
        if not path.is_file():
            stale.append(f"{path} (missing)")
        elif path.read_text(encoding="utf-8") != text:
            stale.append(f"{path} (differs)")
    stale += [f"{p} (no registered config)" for p in _orphans(out_dir, expected)]
    return stale
