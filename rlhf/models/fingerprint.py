"""Content fingerprints of model folders, so that what a run made can be matched to what it read.

A folder's fingerprint is ``sha256:<hex>`` over its files, recursively, in sorted order of their
relative paths: for each file the length of its relative path (8 bytes, little-endian), the path
(UTF-8), its size (8 bytes, little-endian) and its bytes. Files named ``fingerprint.json`` do
not count, so recording one does not change the fingerprint it records.

Every stage writes ``fingerprint.json`` into its final model folder (and into the ``merged/``
copy inside it) when it saves. :func:`model_fingerprint` takes such a record at its word, so
that planning a pipeline does not read every model's weights again; a folder without a
readable record is hashed. A Hub name is fingerprinted by name and revision.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Union

FILE_NAME = "fingerprint.json"
_CHUNK = 1 << 20


def _files(root: Path) -> list[tuple[str, Path]]:
    found = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file() and p.name != FILE_NAME]
    return sorted(found)


def folder_fingerprint(folder: Union[str, Path]) -> str:
    """``sha256:<hex>`` over the files of ``folder`` (see the module docstring)."""
    digest = hashlib.sha256()
    for relative, path in _files(Path(folder)):
        name = relative.encode("utf-8")
        digest.update(len(name).to_bytes(8, "little") + name + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def write_fingerprint(folder: Union[str, Path]) -> str:
    """Records the fingerprint of ``folder`` (and of its ``merged/`` copy) in ``fingerprint.json``."""
    folder = Path(folder)
    merged = folder / "merged"
    if merged.is_dir():
        _record(merged, folder_fingerprint(merged))
    fingerprint = folder_fingerprint(folder)
    _record(folder, fingerprint)
    return fingerprint


def _record(folder: Path, fingerprint: str) -> None:
    payload = {"fingerprint": fingerprint, "files": len(_files(folder))}
    (folder / FILE_NAME).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def read_fingerprint(folder: Union[str, Path]) -> Optional[str]:
    """The fingerprint recorded in ``folder/fingerprint.json``; None if absent or unreadable."""
    try:
        recorded = json.loads((Path(folder) / FILE_NAME).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) and recorded.startswith("sha256:") else None


def model_fingerprint(name_or_path: str, revision: Optional[str] = None) -> str:
    """The fingerprint of a model as a stage loads it: a local folder's (recorded or hashed), the
    folder of a ``builtin:*`` name, or ``hub:<name>@<revision>`` for a Hub name."""
    from rlhf.models.loading import looks_like_local_path, resolve_model_path

    if name_or_path.startswith("builtin:") or looks_like_local_path(name_or_path) or os.path.isdir(name_or_path):
        folder = Path(resolve_model_path(name_or_path)).expanduser()
        if not folder.is_dir():
            return f"missing:{folder}"
        return read_fingerprint(folder) or folder_fingerprint(folder)
    return f"hub:{name_or_path}@{revision or 'main'}"
