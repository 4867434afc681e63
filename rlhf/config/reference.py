"""Markdown key reference generated from the config dataclasses (docs/reference/*.md).

The pages are rendered from the same ``param(default, doc)`` declarations that ``--help-config``
prints, so they cannot drift from the code; a test compares the committed pages with a fresh
rendering.

    python -m rlhf.config.reference            # rewrite docs/reference/
    python -m rlhf.config.reference --check    # exit 1 and name the stale files if they differ
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
from dataclasses import MISSING
from pathlib import Path
from typing import Any, get_type_hints

from rlhf.cli.main import STAGES
from rlhf.config.loader import _type_name

HEADER = "Generated from the config dataclasses by `python -m rlhf.config.reference`; do not edit by hand."
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "reference"

# (page name, "module:Class"): one docs/reference/<name>.md each. Append entries for new configs.
PAGES: list[tuple[str, str]] = [(name, f"{module}:{cls}") for name, (module, cls, _) in STAGES.items()] + [
    ("pipeline", "rlhf.orchestration.pipeline_config:PipelineConfig"),
    ("sweep", "rlhf.orchestration.sweep:SweepConfig"),
]


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


def render_pages(pages: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """File name -> page text for every registered config."""
    rendered = {}
    for name, target in PAGES if pages is None else pages:
        cls = _load(target)
        rendered[f"{name}.md"] = reference_markdown(cls, f"`{name}` configuration keys ({cls.__name__})")
    return rendered


def write_reference(out_dir: str | Path = DEFAULT_OUT) -> list[Path]:
    """Write ``<out_dir>/<name>.md`` for every entry of ``PAGES`` (and remove generated pages of
    configs no longer registered); returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = render_pages()
    for orphan in _orphans(out_dir, pages):
        orphan.unlink()
    written = []
    for filename, text in pages.items():
        path = out_dir / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _orphans(out_dir: Path, pages: dict[str, str]) -> list[Path]:
    """Generated pages (they carry the header) whose config is no longer registered."""
    if not out_dir.is_dir():
        return []
    return [p for p in sorted(out_dir.glob("*.md"))
            if p.name not in pages and HEADER in p.read_text(encoding="utf-8")]


def stale_files(out_dir: str | Path = DEFAULT_OUT) -> list[str]:
    """Pages in ``out_dir`` that are missing, differ from a fresh rendering, or were generated for a
    config that is no longer registered."""
    out_dir = Path(out_dir)
    expected = render_pages()
    stale = []
    for filename, text in expected.items():
        path = out_dir / filename
        if not path.is_file():
            stale.append(f"{path} (missing)")
        elif path.read_text(encoding="utf-8") != text:
            stale.append(f"{path} (differs)")
    stale += [f"{p} (no registered config)" for p in _orphans(out_dir, expected)]
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.config.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the pages differ from the dataclasses")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        if stale:
            print("stale config reference pages; run `python -m rlhf.config.reference`:", file=sys.stderr)
            for line in stale:
                print(f"  {line}", file=sys.stderr)
            return 1
        return 0
    for path in write_reference(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
