"""`rlhf export`: a run's model as one self-contained ``save_pretrained`` folder (LoRA folded in).

    rlhf export runs/sft-tiny exports/sft-tiny [--dtype bfloat16] [--force]

The source is a run folder, a model folder, a LoRA adapter folder or a reward model folder (see
:mod:`rlhf.models.folders`). The output holds safetensors weights, config, generation config, the
tokenizer with its chat template, and ``export.json`` (what was exported and how), so plain
``AutoModelForCausalLM.from_pretrained(out)`` and vLLM load it with no peft and no base model.
A reward model keeps its ``reward_model.json`` and ``normalization.json``. The folder is written
under a temporary name and renamed when complete. Exit 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rlhf.models.folders import (
    DTYPES,
    ModelFolderError,
    ModelSource,
    find_model,
    first_line,
    load_model,
    load_tokenizer,
    stored_dtype,
)

DESCRIPTION = "Write a run's model as one self-contained save_pretrained folder (LoRA folded in)."
EXPORT_FILE = "export.json"
_REWARD_MODEL_FILES = ("reward_model.json", "normalization.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf export", description=DESCRIPTION)
    parser.add_argument("source", help="run folder, model folder, merged/ folder or LoRA adapter folder")
    parser.add_argument("out", help="output folder (must not exist or be empty, unless --force)")
    parser.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="weights dtype of the export (default auto: the dtype the weights were saved in)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing, non-empty output folder")
    return parser


def _check_out(out: Path, source: ModelSource, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ModelFolderError(f"output {out} is a file; expected a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ModelFolderError(f"output {out} exists and is not empty; pass --force to replace it")
    # --force deletes `out`, so it must not be (or hold) the model it is made from.
    sources = [Path(source.given), source.folder] + ([Path(source.base)] if source.base else [])
    target = out.resolve()
    for path in sources:
        if path.exists() and (path.resolve() == target or target in path.resolve().parents):
            raise ModelFolderError(f"output {out} holds the source model {path}; choose another output folder")


def _write_atomically(out: Path, write) -> None:
    """``write(tmp)`` into a temporary sibling of ``out``, then rename it to ``out``; an old ``out``
    is moved aside first and deleted last, so ``out`` is never a half-written folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same parent as the target, so that the renames stay within one file system (atomic).
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))  # unique, as tmp's name is
    try:
        write(tmp)
        _make_shareable(tmp)
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old.exists():
                os.rename(old, out)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _make_shareable(folder: Path) -> None:
    # mkdtemp makes the folder private and safetensors writes its files 0600; an export is meant
    # to be read by others (a serving user), so give it the modes the umask would have given.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def export(source: ModelSource, out: Path, dtype_name: str) -> dict:
    """Write the export of ``source`` to ``out`` (already checked); returns ``export.json``'s content."""
    dtype = stored_dtype(source) if dtype_name == "auto" else DTYPES[dtype_name]
    model = load_model(source, dtype)
    tokenizer = load_tokenizer(source)
    if source.kind != "reward_model":
        model.config.use_cache = True  # training may switch the KV cache off; serving wants it
    info = {
        "source": source.given if source.given.startswith("builtin:") else str(Path(source.given).resolve()),
        "model_folder": str(source.folder.resolve()),
        "model_type": "reward_model" if source.kind == "reward_model" else "causal_lm",
        "architecture": (model.config.architectures or [type(model).__name__])[0],
        "base_model": source.base,
        "lora_merged": source.merged_lora,
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),  # tied weights counted once
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in _REWARD_MODEL_FILES if source.kind == "reward_model" else ():
            if (source.folder / name).is_file():
                shutil.copy2(source.folder / name, tmp / name)
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")

    _write_atomically(out, write)
    return info


def _summary(out: Path, info: dict) -> str:
    origin = info["model_folder"]
    if info["lora_merged"]:
        origin += " (LoRA adapter merged" + (f" into {info['base_model']})" if info["base_model"] else ")")
    lines = [
        f"exported {out}",
        f"  from        {origin}",
        f"  parameters  {info['parameters']:,} ({info['dtype']})",
        f"  chat template  {'yes' if info['chat_template'] else 'NO: apply_chat_template will fail on it'}",
        "load it with:",
    ]
    if info["model_type"] == "reward_model":
        lines += [
            f"  reward_models.scorer.RewardModel.from_pretrained({str(out)!r})",
            f"  transformers.AutoModelForSequenceClassification.from_pretrained({str(out)!r}, num_labels=1)",
        ]
    else:
        lines += [
            f"  transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})",
            f"  vllm serve {out}",
            f"  rlhf chat {out}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    try:
        source = find_model(args.source)
        _check_out(out, source, args.force)
        info = export(source, out, args.dtype)
    except (ValueError, OSError) as err:
        print(f"rlhf export: {first_line(err)}", file=sys.stderr)
        return 2
    print(_summary(out, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
