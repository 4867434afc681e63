"""YAML -> frozen dataclass configs, with ``key=value`` command-line overrides.

A stage's config is a frozen dataclass whose fields are declared with :func:`param`, so the
documentation lives next to the default. Loading is strict: an unknown key or a value of the
wrong type fails with a :class:`ConfigError` that names the source, the dotted key and what
was expected, because a typo silently falling back to a default wastes a training run.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
import types
from dataclasses import MISSING
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config could not be read or does not match its dataclass."""


def param(default: Any = MISSING, doc: str = "", *, default_factory: Any = MISSING) -> Any:
    """A dataclass field carrying its documentation (shown by ``--help-config``)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"doc": doc})


class _Loader(yaml.SafeLoader):
    """safe_load, minus two YAML 1.1 traps: ``1e-4`` read as a string, duplicate keys kept silently."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            # `<<: *base` followed by a key that overrides it is intended, not a duplicate
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Two YAML 1.1 readings nobody means in a config: `1e-4` as a string (floats need a dot there)
# and yes / no / on / off as booleans (`mixed_precision: no` would become False). As in
# YAML 1.2, 1e-4 is a float and only true / false are booleans.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    kind = "mapping" if isinstance(value, dict) else type(value).__name__
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _suggest(word: Any, choices, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean '{_join(prefix, close[0])}'?" if close else ""


def _build(cls: type, data: Any, prefix: str, source: str, partial: bool = False) -> Any:
    """Build ``cls`` from a mapping; ``partial`` only checks the keys given (for overrides)."""
    if not isinstance(data, dict):
        where = f"key '{prefix}'" if prefix else "top level"
        raise ConfigError(f"{source}: {where} expects a mapping (section {cls.__name__}), got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    moved = getattr(cls, "MOVED_KEYS", {})
    for key in data:
        if key in moved:
            raise ConfigError(f"{source}: key '{_join(prefix, key)}' has moved to '{moved[key]}'")
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{_join(prefix, key)}'{_suggest(key, fields, prefix)}")
    kwargs = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key, source, partial)
        elif partial or f.default is not MISSING or f.default_factory is not MISSING:
            continue
        else:
            raise ConfigError(f"{source}: missing required key '{key}'")
    if partial:
        return data
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # e.g. a check in __post_init__
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{source}: {f'section {prefix!r}' if prefix else cls.__name__}: {err}") from err


def _convert(tp: Any, value: Any, key: str, source: str, partial: bool = False) -> Any:
    origin, args = get_origin(tp), get_args(tp)

    def fail(expected: str):
        return ConfigError(f"{source}: key '{key}' expects {expected}, got {_show(value)}")

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the most precise one
            return _convert(options[0], value, key, source, partial)
        for option in options:
            try:
                return _convert(option, value, key, source, partial)
            except ConfigError:
                pass
        raise fail(_type_name(tp))
    if origin is Literal:
        # type() as well as ==, so True is not accepted for a Literal[1, ...]
        if any(value == a and type(value) is type(a) for a in args):
            return value
        hint = _suggest(value, [a for a in args if isinstance(a, str)]) if isinstance(value, str) else ""
        got = repr(value) if isinstance(value, str) else _show(value)
        raise ConfigError(f"{source}: key '{key}' expects one of {', '.join(map(repr, args))}, got {got}{hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail(_type_name(tp))
        item_type = args[0] if args else Any
        return [_convert(item_type, v, f"{key}[{i}]", source, partial) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(_type_name(tp))
        value_type = args[1] if len(args) == 2 else Any
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{source}: key '{key}' expects string keys, got {_show(bad[0])}")
        return {k: _convert(value_type, v, f"{key}.{k}", source, partial) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return _build(tp, value, key, source, partial)
    if tp in (bool, int, float):
        # bool is a subclass of int in Python, but `max_steps: yes` is a mistake, not 1
        numeric = (int, float) if tp is float else (tp,)
        if isinstance(value, numeric) and isinstance(value, bool) == (tp is bool):
            return tp(value)
        raise fail(tp.__name__)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise fail(tp.__name__)
    raise TypeError(f"config field '{key}' has an unsupported type annotation {tp!r}")


def from_dict(cls: type, data: dict, *, source: str = "config") -> Any:
    """Build the frozen dataclass ``cls`` from nested plain data, strictly."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return _build(cls, data, "", source)


def merge(base: dict, override: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``override`` replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["optim.lr=1e-4", "data.train=[a.jsonl,b.jsonl]"]`` -> nested dict; values are YAML."""
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"command line: override {item!r} is not key=value")
        try:
            value = _yaml_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"command line: override {item!r} has an invalid value: {err}") from None
        for part in reversed(parts):
            value = {part: value}
        out = merge(out, value)
    return out


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = _yaml_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config file: {getattr(err, 'strerror', None) or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {_show(data)}")
    return data


def load_config(
    cls: type, path: str | os.PathLike | None = None, overrides: list[str] = (), *, extra: dict | None = None
) -> Any:
    """Defaults <- YAML file <- ``extra`` <- command-line overrides, then strict validation."""
    source = os.fspath(path) if path is not None else "config"
    data = _read_yaml(source) if path is not None else {}
    cli = parse_overrides(list(overrides))
    # Checked on their own first so a typo on the command line is not blamed on the file.
    _build(cls, cli, "", "command line", partial=True)
    return from_dict(cls, merge(merge(data, extra or {}), cli), source=source)


def to_dict(cfg: Any) -> dict:
    """Nested plain Python data (dicts, lists, scalars), ready for YAML, JSON or wandb."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML; atomic, so a crash never leaves a half-written config to resume from."""
    path = os.fspath(path)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True, default_flow_style=False)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".yaml.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a config is not a secret
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def describe(cls: type, _prefix: str = "") -> str:
    """One line per dotted key: ``optim.lr (float, default 0.0001): Peak learning rate.``"""
    hints = get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, tp = _join(_prefix, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(describe(tp, key))
            continue
        if f.default is not MISSING:
            default = f"default {f.default!r}"
        elif f.default_factory is not MISSING:
            default = f"default {f.default_factory()!r}"
        else:
            default = "required"
        doc = f.metadata.get("doc", "")
        lines.append(f"{key} ({_type_name(tp)}, {default})" + (f": {doc}" if doc else ""))
    return "\n".join(line for line in lines if line)


def replace_path(cfg: Any, path: str, value: Any, _prefix: str = "") -> Any:
    """A copy of ``cfg`` with the dotted field ``path`` set to ``value`` (checked like a config value)."""
    head, _, rest = path.partition(".")
    key = _join(_prefix, head)
    fields = {f.name for f in dataclasses.fields(cfg) if f.init}
    if head not in fields:
        raise ConfigError(f"replace_path: unknown key '{key}'{_suggest(head, fields, _prefix)}")
    if rest:
        return dataclasses.replace(cfg, **{head: replace_path(getattr(cfg, head), rest, value, key)})
    checked = _convert(get_type_hints(type(cfg))[head], value, key, "replace_path")
    return dataclasses.replace(cfg, **{head: checked})
