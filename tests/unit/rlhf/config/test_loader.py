"""rlhf.config.loader: YAML + command-line overrides -> frozen dataclasses, with errors that name the key."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from rlhf.config.loader import (
    ConfigError,
    describe,
    from_dict,
    load_config,
    merge,
    param,
    parse_overrides,
    replace_path,
    save_config,
    to_dict,
)
from rlhf.config.sections import ModelConfig, OptimConfig


@dataclass(frozen=True)
class DataSection:
    train: list[str] = param(default_factory=list, doc="Training files.")
    weights: dict[str, float] = param(default_factory=dict, doc="Mixing weight per file.")


@dataclass(frozen=True)
class StageConfig:
    output_dir: str = param(doc="Where results go.")
    max_steps: int = param(10, "Optimizer steps.")
    packing: bool = param(False, "Pack sequences.")
    eval_every: Optional[int] = param(None, "Evaluate every N steps; None = never.")
    model: ModelConfig = param(default_factory=ModelConfig, doc="Model.")
    optim: OptimConfig = param(default_factory=OptimConfig, doc="Optimiser.")
    data: DataSection = param(default_factory=DataSection, doc="Data.")


def write(tmp_path, text: str, name: str = "stage.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def raises(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_yaml_load_fills_nested_sections_and_keeps_defaults(tmp_path):
    path = write(tmp_path, "output_dir: out\nmax_steps: 20\noptim:\n  lr: 1e-4\nmodel:\n  adapt:\n    strategy: lora\n")
    cfg = load_config(StageConfig, path)
    assert cfg.output_dir == "out" and cfg.max_steps == 20
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)  # YAML 1.1 alone reads '1e-4' as a str
    assert cfg.model.adapt.strategy == "lora" and cfg.model.adapt.lora_r == 16
    assert cfg.data == DataSection()


def test_empty_file_uses_defaults_and_required_key_is_reported(tmp_path):
    path = write(tmp_path, "")
    assert load_config(StageConfig, path, ["output_dir=o"]).max_steps == 10
    assert "missing required key 'output_dir'" in raises(load_config, StageConfig, path)


def test_override_by_dotted_key_beats_file_and_extra(tmp_path):
    path = write(tmp_path, "output_dir: out\noptim:\n  lr: 0.5\n  warmup_steps: 3\n")
    cfg = load_config(
        StageConfig,
        path,
        ["optim.lr=2e-5", "model.adapt.lora_r=4", "data.train=[a.jsonl,b.jsonl]"],
        extra={"optim": {"lr": 0.1}, "max_steps": 7},
    )
    assert cfg.optim.lr == 2e-5
    assert cfg.optim.warmup_steps == 3  # a nested override does not wipe sibling keys from the file
    assert cfg.max_steps == 7
    assert cfg.model.adapt.lora_r == 4
    assert cfg.data.train == ["a.jsonl", "b.jsonl"]


def test_int_is_coerced_to_float_but_bool_is_not_a_number():
    cfg = from_dict(OptimConfig, {"lr": 1, "betas": [0, 0]})
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    assert cfg.betas == [0.0, 0.0] and all(type(b) is float for b in cfg.betas)
    assert "key 'lr' expects float, got bool True" in raises(from_dict, OptimConfig, {"lr": True})
    assert "key 'max_steps' expects int, got bool True" in raises(
        from_dict, StageConfig, {"output_dir": "o", "max_steps": True}
    )


def test_bool_field_rejects_int_and_string():
    assert from_dict(StageConfig, {"output_dir": "o", "packing": True}).packing is True
    assert "key 'packing' expects bool" in raises(from_dict, StageConfig, {"output_dir": "o", "packing": 1})
    assert "key 'packing' expects bool" in raises(from_dict, StageConfig, {"output_dir": "o", "packing": "yes"})


def test_literal_error_lists_choices_and_suggests():
    msg = raises(from_dict, ModelConfig, {"adapt": {"strategy": "lorra"}}, source="configs/sft/tiny.yaml")
    assert msg.startswith("configs/sft/tiny.yaml: key 'adapt.strategy' expects one of 'full', 'freeze', 'lora'")
    assert "got 'lorra'" in msg and "did you mean 'lora'?" in msg


def test_unknown_yaml_key_names_file_dotted_key_and_suggestion(tmp_path):
    path = write(tmp_path, "output_dir: out\noptim:\n  lrr: 0.1\n")
    msg = raises(load_config, StageConfig, path)
    assert msg == f"{path}: unknown key 'optim.lrr'; did you mean 'optim.lr'?"


def test_unknown_override_key_is_blamed_on_command_line(tmp_path):
    path = write(tmp_path, "output_dir: out\n")
    msg = raises(load_config, StageConfig, path, ["optim.lrr=0.1"])
    assert msg == "command line: unknown key 'optim.lrr'; did you mean 'optim.lr'?"
    assert raises(load_config, StageConfig, path, ["optim.lr=fast"]) == (
        "command line: key 'optim.lr' expects float, got str 'fast'"
    )


def test_wrong_type_names_the_key_and_value():
    msg = raises(from_dict, StageConfig, {"output_dir": "o", "optim": {"lr": "fast"}}, source="x.yaml")
    assert msg == "x.yaml: key 'optim.lr' expects float, got str 'fast'"
    assert "key 'optim.lr' expects float, got mapping" in raises(
        from_dict, StageConfig, {"output_dir": "o", "optim": {"lr": {"peak": 1}}}
    )
    assert "key 'optim' expects a mapping (section OptimConfig), got float 0.1" in raises(
        from_dict, StageConfig, {"output_dir": "o", "optim": 0.1}
    )
    assert "key 'data.train[1]' expects str, got int 3" in raises(
        from_dict, StageConfig, {"output_dir": "o", "data": {"train": ["a", 3]}}
    )
    assert "key 'data.weights.a' expects float" in raises(
        from_dict, StageConfig, {"output_dir": "o", "data": {"weights": {"a": "x"}}}
    )


def test_optional_accepts_none_and_checks_the_inner_type():
    assert from_dict(StageConfig, {"output_dir": "o", "eval_every": None}).eval_every is None
    assert from_dict(StageConfig, {"output_dir": "o", "eval_every": 5}).eval_every == 5
    assert "key 'eval_every' expects int, got float 0.5" in raises(
        from_dict, StageConfig, {"output_dir": "o", "eval_every": 0.5}
    )
    assert from_dict(ModelConfig, {"revision": None}).revision is None


def test_list_of_float():
    assert from_dict(OptimConfig, {"betas": [0.8, 0.95]}).betas == [0.8, 0.95]
    assert "key 'betas' expects list[float], got float 0.9" in raises(from_dict, OptimConfig, {"betas": 0.9})
    assert "key 'betas[1]' expects float, got str 'x'" in raises(from_dict, OptimConfig, {"betas": [0.9, "x"]})


def test_config_is_frozen():
    cfg = from_dict(StageConfig, {"output_dir": "o"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 3.0


def test_to_dict_from_dict_round_trip():
    cfg = from_dict(
        StageConfig,
        {
            "output_dir": "o",
            "optim": {"lr": 3e-5},
            "data": {"weights": {"a": 0.5}},
            "model": {"adapt": {"strategy": "qlora"}},
        },
    )
    plain = to_dict(cfg)
    assert plain["optim"]["lr"] == 3e-5 and plain["model"]["adapt"]["strategy"] == "qlora"
    assert type(plain["model"]) is dict
    assert from_dict(StageConfig, plain) == cfg


def test_save_then_load_gives_equal_object(tmp_path):
    cfg = from_dict(
        StageConfig,
        {
            "output_dir": "o",
            "eval_every": 4,
            "optim": {"lr": 1e-8, "betas": [0.9, 0.99]},
            "data": {"train": ["a.jsonl"]},
        },
    )
    path = tmp_path / "sub" / "config.yaml"
    save_config(cfg, path)
    assert load_config(StageConfig, path) == cfg
    assert os.listdir(tmp_path / "sub") == ["config.yaml"]  # no temp file left behind
    text = path.read_text()
    assert text.index("output_dir") < text.index("max_steps")  # field order, not sorted


def test_describe_lists_dotted_keys_with_types_defaults_and_docs():
    lines = describe(StageConfig).splitlines()
    assert "optim.lr (float, default 0.0001): Peak learning rate." in lines
    assert "output_dir (str, required): Where results go." in lines
    assert "optim.betas (list[float], default [0.9, 0.999]): AdamW betas." in lines
    assert any(line.startswith("model.adapt.strategy ('full' | 'freeze'") for line in lines)
    assert not any(line.startswith(("optim ", "model ", "model.adapt ")) for line in lines)


def test_parse_overrides():
    parsed = parse_overrides(
        [
            "optim.lr=1e-4",
            "max_steps=20",
            "data.train=[a.jsonl,b.jsonl]",
            "x=3E5",
            "optim.eps=-1.5e-8",
            "name=v1e5",
            "model.revision=null",
        ]
    )
    assert parsed == {
        "optim": {"lr": 1e-4, "eps": -1.5e-8},
        "max_steps": 20,
        "data": {"train": ["a.jsonl", "b.jsonl"]},
        "x": 3e5,
        "name": "v1e5",
        "model": {"revision": None},
    }
    assert type(parsed["optim"]["lr"]) is float
    assert "override 'foo' is not key=value" in raises(parse_overrides, ["foo"])
    assert "override 'a..b=1' is not key=value" in raises(parse_overrides, ["a..b=1"])


def test_merge_is_deep_and_leaves_inputs_unchanged():
    base = {"optim": {"lr": 1, "eps": 2}, "x": 1}
    override = {"optim": {"lr": 3}, "y": {"z": 1}}
    assert merge(base, override) == {"optim": {"lr": 3, "eps": 2}, "x": 1, "y": {"z": 1}}
    assert base == {"optim": {"lr": 1, "eps": 2}, "x": 1} and override == {"optim": {"lr": 3}, "y": {"z": 1}}


def test_file_errors_name_the_path(tmp_path):
    path = write(tmp_path, "output_dir: out\noptim:\n  lr: [1, 2\n")
    msg = raises(load_config, StageConfig, path)
    assert msg.startswith(f"{path}: invalid YAML at line ") and "line 4" in msg
    dup = write(tmp_path, "output_dir: a\nmax_steps: 1\noutput_dir: b\n", "dup.yaml")
    assert "duplicate key 'output_dir'" in raises(load_config, StageConfig, dup)
    missing = str(tmp_path / "nope.yaml")
    assert raises(load_config, StageConfig, missing) == f"{missing}: config file not found"
    assert "top level must be a mapping" in raises(load_config, StageConfig, write(tmp_path, "- a\n", "list.yaml"))


def test_replace_path_returns_a_checked_copy():
    cfg = from_dict(StageConfig, {"output_dir": "o"})
    new = replace_path(cfg, "model.adapt.lora_r", 8)
    assert new.model.adapt.lora_r == 8 and cfg.model.adapt.lora_r == 16
    assert new.model.name_or_path == cfg.model.name_or_path
    assert replace_path(cfg, "optim.lr", 1).optim.lr == 1.0
    assert "unknown key 'model.adapt.lora_rr'; did you mean 'model.adapt.lora_r'?" in raises(
        replace_path, cfg, "model.adapt.lora_rr", 8
    )
    assert "key 'max_steps' expects int" in raises(replace_path, cfg, "max_steps", "many")


@dataclass(frozen=True)
class Positive:
    n: int = param(1, "Must be positive.")

    def __post_init__(self):
        if self.n <= 0:
            raise ValueError("n must be positive")


@dataclass(frozen=True)
class Outer:
    inner: Positive = param(default_factory=Positive, doc="")
    mode: Literal["a", "b"] = param("a", "")
    level: Literal[0, 1] = param(0, "")


def test_post_init_errors_and_literal_of_ints():
    assert from_dict(Outer, {"inner": {"n": 2}}).inner.n == 2
    assert (
        raises(from_dict, Outer, {"inner": {"n": 0}}, source="f.yaml") == "f.yaml: section 'inner': n must be positive"
    )
    assert "key 'mode' expects one of 'a', 'b', got int 1" in raises(from_dict, Outer, {"mode": 1})
    assert from_dict(Outer, {"level": 1}).level == 1
    assert "key 'level' expects one of 0, 1, got bool True" in raises(from_dict, Outer, {"level": True})


def test_yaml_no_is_a_string_and_true_is_a_bool():
    from rlhf.config.loader import parse_overrides

    assert parse_overrides(["precision.mixed_precision=no", "a=true", "b=off", "c=1e-4"]) == {
        "precision": {"mixed_precision": "no"},
        "a": True,
        "b": "off",
        "c": 1e-4,
    }
