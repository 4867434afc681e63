"""State trees on disk without pickle: tensors in safetensors, everything else as JSON.

A state tree is what ``state_dict()`` methods return: nested dicts, lists and tuples of
tensors, numbers, strings, ``None`` and a few well-known types. :func:`save_tree` writes the
tensors into a safetensors file and the shape of the tree, as JSON, into that file's header;
:func:`load_tree` reads both back. :func:`dump_json_tree` / :func:`load_json_tree` do the same
for small trees (RNG states, schedulers) in a plain JSON file.

Nothing is ever unpickled. Objects are rebuilt only for the classes named in ``_OBJECTS``
(DeepSpeed's loss scalers and fragment addresses, which its optimizer state holds) by setting their attributes; any
other class is refused when saving, so a file that names one cannot be produced by this code and
is refused when loading.
"""

from __future__ import annotations

import enum
import errno
import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

TREE_KEY = "rlhf.state_tree"

# Classes whose instances may appear in a tree, rebuilt from their attributes.
_OBJECTS = {
    "deepspeed.runtime.fp16.loss_scaler:LossScaler",
    "deepspeed.runtime.fp16.loss_scaler:DynamicLossScaler",
    "deepspeed.utils.tensor_fragment:fragment_address",
}


class StateFileError(RuntimeError):
    """A state file is missing, damaged or not one this code writes (message names the file)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode(value: Any, tensors: dict[str, torch.Tensor] | None, seen: dict, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return _encode(value.value, tensors, seen, where)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, torch.Tensor):
        if tensors is None:
            data = value.detach().cpu()
            return {
                "~tensor": {"dtype": str(data.dtype).removeprefix("torch."), "shape": list(data.shape)},
                "data": data.flatten().tolist(),
            }
        key = seen.get(id(value))
        if key is None:
            key = f"t{len(tensors)}"
            data = value.detach().cpu().contiguous()
            storage = (data.untyped_storage().data_ptr(), data.device.type) if data.numel() else None
            if storage is not None and storage in seen:  # a view of a tensor already saved
                data = data.clone()
            elif storage is not None:
                seen[storage] = key
            tensors[key] = data
            seen[id(value)] = key
        return {"~t": key}
    if isinstance(value, np.ndarray):
        return {"~np": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, torch.Size):
        return {"~size": list(value)}
    if isinstance(value, torch.dtype):
        return {"~dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"~device": str(value)}
    if isinstance(value, dict):
        return {
            "~d": [
                [_encode(k, tensors, seen, where), _encode(v, tensors, seen, f"{where}.{k}")] for k, v in value.items()
            ]
        }
    if isinstance(value, tuple):
        return {"~tuple": [_encode(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, (set, frozenset)):
        return {"~set": [_encode(v, tensors, seen, where) for v in sorted(value, key=repr)]}
    if isinstance(value, list):
        return [_encode(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(value)]
    name = _qualname(type(value))
    if name in _OBJECTS:
        return {"~obj": name, "state": _encode(dict(vars(value)), tensors, seen, where)}
    raise TypeError(f"state at {where or 'the root'} holds a {name}, which cannot be saved without pickle")


def _decode(value: Any, tensors, path) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, path) for v in value]
    if not isinstance(value, dict):
        return value
    if "~t" in value:
        return tensors(value["~t"])
    if "~d" in value:
        return {_decode(k, tensors, path): _decode(v, tensors, path) for k, v in value["~d"]}
    if "~tuple" in value:
        return tuple(_decode(v, tensors, path) for v in value["~tuple"])
    if "~set" in value:
        return {_decode(v, tensors, path) for v in value["~set"]}
    if "~size" in value:
        return torch.Size(value["~size"])
    if "~dtype" in value:
        return _torch_dtype(value["~dtype"], path)
    if "~device" in value:
        return torch.device(value["~device"])
    if "~np" in value:
        return np.asarray(value["~np"], dtype=_numpy_dtype(value["dtype"], path))
    if "~tensor" in value:
        spec = value["~tensor"]
        flat = torch.tensor(value["data"], dtype=_torch_dtype(spec["dtype"], path))
        return flat.reshape(spec["shape"])
    if "~obj" in value:
        name = value["~obj"]
        if name not in _OBJECTS:
            raise StateFileError(path, f"names the class {name}, which is not one a state file may hold")
        module, _, qualname = name.partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        state = _decode(value["state"], tensors, path)
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and k.isidentifier() and not k.startswith("__") for k in state
        ):
            raise StateFileError(path, f"holds a {name} with attributes that are not plain names")
        obj = cls.__new__(cls)
        obj.__dict__.update(state)
        return obj
    raise StateFileError(path, f"holds an unknown entry {sorted(value)[:3]}")


def disk_full(err: OSError, path: str | os.PathLike) -> OSError:
    """The error to raise for ``err`` while writing ``path``: a full disk names the path."""
    if err.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, f"no space left on device while writing {path}")
    if err.errno == errno.EDQUOT:
        return OSError(errno.EDQUOT, f"disk quota exceeded while writing {path}")
    return err


def _torch_dtype(name: Any, path) -> torch.dtype:
    """``torch.<name>`` only when it is a dtype (a file must not be able to name a function)."""
    found = getattr(torch, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not isinstance(found, torch.dtype):
        raise StateFileError(path, f"names {name!r} as a torch dtype, which it is not")
    return found


def _numpy_dtype(name: Any, path) -> np.dtype:
    """Plain numeric numpy dtypes only (no object arrays)."""
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise StateFileError(path, f"names {name!r} as a numeric numpy dtype, which it is not")
    return dtype


def write_bytes_durably(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` and fsyncs it; a full disk says so with the path."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise disk_full(err, path) from err


def fsync_path(path: str | os.PathLike) -> None:
    """fsyncs a file or folder (a folder: its entries, e.g. after a rename)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise disk_full(err, path) from err


def save_tree(tree: Any, path: str | os.PathLike) -> None:
    """Writes a state tree to a safetensors file (tensors) with its structure in the header."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, tensors, {}, "")
    try:
        save_file(tensors, str(path), metadata={TREE_KEY: json.dumps(skeleton)})
    except OSError as err:
        raise disk_full(err, path) from err
    except Exception as err:  # safetensors reports I/O errors in its own type and words
        for code, words in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded")):
            if words in str(err):
                raise disk_full(OSError(code, words), path) from err
        raise
    fsync_path(path)


def load_tree(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """Reads a tree written by :func:`save_tree`; a damaged or foreign file raises StateFileError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise StateFileError(path, "is missing")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            if TREE_KEY not in metadata:
                raise StateFileError(path, "is not a state file written by rlhf (no state tree in its header)")
            skeleton = json.loads(metadata[TREE_KEY])
            names = set(handle.keys())

            def tensor(key: str) -> torch.Tensor:
                if key not in names:
                    raise StateFileError(path, f"has no tensor {key!r}")
                return handle.get_tensor(key)

            return _decode(skeleton, tensor, path)
    except StateFileError:
        raise
    except Exception as err:  # safetensors' errors for truncated or foreign files, bad JSON
        raise StateFileError(path, f"is damaged or not a safetensors file ({type(err).__name__}: {err})") from err


def _no_tensor_file(path: Path):
    def tensor(key: str) -> torch.Tensor:
        raise StateFileError(path, f"refers to a tensor {key!r} outside the file")

    return tensor


def dump_json_tree(tree: Any, path: str | os.PathLike) -> None:
    """Writes a small state tree (tensors inline) as JSON, durably."""
    text = json.dumps(_encode(tree, None, {}, ""))
    write_bytes_durably(path, text.encode("utf-8"))


def load_json_tree(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StateFileError(path, "is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _decode(data, _no_tensor_file(path), path)
    except StateFileError:
        raise
    except Exception as err:
        raise StateFileError(path, f"is damaged ({type(err).__name__}: {err})") from err


__all__ = [
    "StateFileError",
    "dump_json_tree",
    "load_json_tree",
    "load_tree",
    "save_tree",
    "write_bytes_durably",
]
