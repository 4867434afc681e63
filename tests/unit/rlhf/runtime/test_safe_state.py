"""State trees in safetensors / JSON: exact round trips, and nothing a file says is ever executed."""

import errno
import pickle
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch

from rlhf.runtime.safe_state import (
    StateFileError,
    dump_json_tree,
    load_json_tree,
    load_tree,
    save_tree,
    write_bytes_durably,
)


def _adamw_state():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.95))
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_optimizer_state_round_trips_exactly_and_keeps_key_and_container_types(tmp_path):
    _, optimizer = _adamw_state()
    state = optimizer.state_dict()
    save_tree(state, tmp_path / "opt.safetensors")
    loaded = load_tree(tmp_path / "opt.safetensors")
    assert list(loaded["state"]) == [0, 1]  # int keys stay ints
    assert loaded["param_groups"][0]["betas"] == (0.8, 0.95)  # tuples stay tuples
    for index in (0, 1):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(loaded["state"][index][name], state["state"][index][name])
    restored = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    restored.load_state_dict(loaded)
    assert restored.param_groups[0]["lr"] == 0.1


def test_mixed_tree_round_trip(tmp_path):
    shared = torch.arange(6.0).reshape(2, 3)
    tree = OrderedDict(
        a=shared,
        b=[shared, {"size": torch.Size([2, 3]), "dtype": torch.bfloat16, "names": {"x", "y"}}],
        c=(1, 2.5, float("inf"), None, True, "s"),
        d=np.arange(4, dtype=np.uint32),
    )
    save_tree(tree, tmp_path / "t.safetensors")
    back = load_tree(tmp_path / "t.safetensors")
    assert torch.equal(back["a"], shared) and torch.equal(back["b"][0], shared)
    assert back["b"][1] == {"size": torch.Size([2, 3]), "dtype": torch.bfloat16, "names": {"x", "y"}}
    assert back["c"] == (1, 2.5, float("inf"), None, True, "s")
    assert back["d"].dtype == np.uint32 and back["d"].tolist() == [0, 1, 2, 3]


def test_rng_states_round_trip_through_json(tmp_path):
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    dump_json_tree(state, tmp_path / "rng.json")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    back = load_json_tree(tmp_path / "rng.json")
    random.setstate(back["python"])
    np.random.set_state(back["numpy"])
    torch.set_rng_state(back["torch"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_unknown_objects_are_refused_when_saving(tmp_path):
    class Custom:
        pass

    with pytest.raises(TypeError, match="cannot be saved without pickle"):
        save_tree({"x": Custom()}, tmp_path / "x.safetensors")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    for name in ("opt.safetensors", "rng.json"):
        (tmp_path / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(StateFileError, match="opt.safetensors"):
        load_tree(tmp_path / "opt.safetensors")
    with pytest.raises(StateFileError, match="rng.json"):
        load_json_tree(tmp_path / "rng.json")
    assert not marker.exists()


def test_a_header_naming_another_class_is_refused(tmp_path):
    from safetensors.torch import save

    header = '{"~obj": "os:system", "state": {"~d": []}}'
    (tmp_path / "x.safetensors").write_bytes(save({}, metadata={"rlhf.state_tree": header}))
    with pytest.raises(StateFileError, match="not one a state file may hold"):
        load_tree(tmp_path / "x.safetensors")


def test_a_truncated_file_names_itself(tmp_path):
    save_tree({"w": torch.ones(1000)}, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError, match=r"m\.safetensors.*damaged"):
        load_tree(tmp_path / "m.safetensors")


def test_a_full_disk_says_so_with_the_path():
    with pytest.raises(OSError, match="no space left on device while writing /dev/full") as caught:
        write_bytes_durably("/dev/full", b"x" * 10)
    assert caught.value.errno == errno.ENOSPC


@pytest.mark.parametrize(
    "entry",
    [
        '{"~dtype": "load"}',  # a function of torch, not a dtype
        '{"~tensor": {"dtype": "seed", "shape": [1]}, "data": [1]}',
        '{"~np": [1], "dtype": "object"}',
        '{"~obj": "deepspeed.utils.tensor_fragment:fragment_address", "state": {"~d": [["__class__", 1]]}}',
    ],
)
def test_entries_that_name_something_other_than_data_are_refused(tmp_path, entry):
    from safetensors.torch import save

    (tmp_path / "x.safetensors").write_bytes(save({}, metadata={"rlhf.state_tree": entry}))
    with pytest.raises(StateFileError):
        load_tree(tmp_path / "x.safetensors")


def test_allowed_objects_round_trip(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.utils.tensor_fragment import fragment_address

    tree = {"scaler": LossScaler(64.0), "address": fragment_address(numel=6, start=2)}
    save_tree(tree, tmp_path / "o.safetensors")
    back = load_tree(tmp_path / "o.safetensors")
    assert isinstance(back["scaler"], LossScaler) and back["scaler"].loss_scale == 64.0
    assert back["address"] == fragment_address(numel=6, start=2)


def test_views_of_one_tensor_are_saved_without_sharing_errors(tmp_path):
    base = torch.arange(8.0)
    save_tree({"a": base[:4], "b": base[4:], "c": base}, tmp_path / "v.safetensors")
    back = load_tree(tmp_path / "v.safetensors")
    assert back["a"].tolist() == [0, 1, 2, 3] and back["b"].tolist() == [4, 5, 6, 7] and torch.equal(back["c"], base)
