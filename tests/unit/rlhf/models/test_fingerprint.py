"""rlhf.models.fingerprint: content fingerprints of model folders, recorded at save time."""

from __future__ import annotations

import hashlib
import json

from rlhf.models.fingerprint import FILE_NAME, folder_fingerprint, model_fingerprint, write_fingerprint


def _by_hand(files: dict[str, bytes]) -> str:
    """sha256 over (path length, path, size, bytes) of every file, in sorted path order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        path = name.encode()
        digest.update(len(path).to_bytes(8, "little") + path + len(files[name]).to_bytes(8, "little"))
        digest.update(files[name])
    return "sha256:" + digest.hexdigest()


def _folder(root, files: dict[str, bytes]):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_fingerprint_is_sha256_over_names_sizes_and_contents(tmp_path):
    files = {"config.json": b'{"a": 1}', "model.safetensors": b"\x00\x01" * 50, "merged/config.json": b"{}"}
    folder = _folder(tmp_path / "m", files)
    assert folder_fingerprint(folder) == _by_hand(files)
    # the same files elsewhere give the same fingerprint; a renamed or changed file another one
    assert folder_fingerprint(_folder(tmp_path / "copy", files)) == _by_hand(files)
    renamed = {**{k: v for k, v in files.items() if k != "config.json"}, "config2.json": files["config.json"]}
    assert folder_fingerprint(_folder(tmp_path / "renamed", renamed)) == _by_hand(renamed) != _by_hand(files)
    (folder / "model.safetensors").write_bytes(b"\x00\x02" * 50)
    assert folder_fingerprint(folder) != _by_hand(files)


def test_written_fingerprint_is_recorded_in_the_folder_and_its_merged_copy(tmp_path):
    files = {"config.json": b"{}", "merged/config.json": b'{"merged": true}', "merged/w.bin": b"123"}
    folder = _folder(tmp_path / "model", files)
    recorded = write_fingerprint(folder)
    assert recorded == _by_hand(files)
    assert json.loads((folder / FILE_NAME).read_text())["fingerprint"] == recorded
    merged = {"config.json": files["merged/config.json"], "w.bin": files["merged/w.bin"]}
    assert json.loads((folder / "merged" / FILE_NAME).read_text())["fingerprint"] == _by_hand(merged)
    # fingerprint.json files do not count, so recording one leaves the fingerprint as it was
    assert folder_fingerprint(folder) == recorded
    # model_fingerprint reads the record (it does not hash the weights again) ...
    (folder / "config.json").write_bytes(b"changed")
    assert model_fingerprint(str(folder)) == recorded
    assert model_fingerprint(str(folder / "merged")) == _by_hand(merged)
    # ... and hashes a folder without a readable record
    (folder / FILE_NAME).write_text("{not json")
    assert model_fingerprint(str(folder)) == _by_hand({**files, "config.json": b"changed"})


def test_hub_names_are_fingerprinted_by_name_and_revision():
    assert model_fingerprint("HuggingFaceTB/SmolLM2-135M-Instruct") == "hub:HuggingFaceTB/SmolLM2-135M-Instruct@main"
    assert model_fingerprint("gpt2", revision="abc123") == "hub:gpt2@abc123"


def test_builtin_names_are_fingerprinted_by_their_folder(tiny_model_path):
    from pathlib import Path

    files = {
        p.relative_to(tiny_model_path).as_posix(): p.read_bytes()
        for p in Path(tiny_model_path).rglob("*")
        if p.is_file() and p.name != FILE_NAME
    }
    assert model_fingerprint("builtin:tiny") == _by_hand(files)
