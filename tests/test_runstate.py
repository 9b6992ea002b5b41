"""Training state as data: state files round-trip exactly and read back nothing but data; a checkpoint's
manifest catches truncated, corrupt and swapped files; a full disk mid-checkpoint leaves nothing."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from imagegen import runstate, statefile
from imagegen.errors import ImagegenError
from tests.hazards import disk_full_after, snapshot


def _state(step=3, size=4):
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(size)}, 1: {}},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "foreach": None, "amsgrad": False,
                                   "params": [0, 1]}]}
    ema = {"n_averaged": torch.tensor(3), "module.w": torch.randn(size)}
    return runstate.TrainingState(step=step, model={"w": torch.randn(size), "b": torch.zeros(())},
                                  optimizer=optimizer, ema=ema, loop={"window": {"loss": 1.25, "steps": 1}},
                                  rng={"cpu": torch.randint(0, 255, (2, 16), dtype=torch.uint8)})


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


def test_a_state_file_round_trips_nested_state_exactly(tmp_path):
    state = {"state": {0: {"step": torch.tensor(7.0), "m": torch.randn(3, 2).bfloat16()}, "x": [1, (2.5,)]},
             "flags": (True, False), "nan": float("nan"), "inf": -math.inf, "name": "adamw", "empty": {},
             "big": 2**40, "scalar": torch.tensor(5, dtype=torch.int64), "none": None}
    statefile.save(state, tmp_path / "s.safetensors", step=7)
    loaded, info = statefile.load(tmp_path / "s.safetensors")
    assert _equal(state, loaded) and info == {"step": 7}


@pytest.mark.parametrize("structure", [
    {"t": "missing"}, {"v": [1]}, {"x": 1}, {"l": [{"v": 1}], "v": 2}, {"d": [[["k"], {"v": 1}]]},
    {"d": [["k"]]}, "v", {"l": "not a list"},
])
def test_a_malformed_structure_is_refused(tmp_path, structure):
    meta = {"imagegen": json.dumps({"format": statefile.FORMAT, "structure": structure, "info": {}})}
    save_file({"t0": torch.zeros(1)}, str(tmp_path / "s.safetensors"), metadata=meta)
    with pytest.raises(statefile.StateFileError):
        statefile.load(tmp_path / "s.safetensors")


def test_objects_that_are_not_data_are_not_stored(tmp_path):
    with pytest.raises(TypeError, match="cannot store a PosixPath"):
        statefile.save({"where": tmp_path}, tmp_path / "s.safetensors")


def test_a_checkpoint_round_trips(tmp_path):
    state = _state()
    directory = runstate.write(tmp_path, state)
    assert directory.name == "step_00000003" and runstate.list_checkpoints(tmp_path) == [directory]
    back = runstate.read(directory)
    for field in ("step", "model", "optimizer", "ema", "rng", "scaler", "loop"):
        assert _equal(getattr(state, field), getattr(back, field)), field


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "ema.safetensors",
                                  "rng.safetensors"])
@pytest.mark.parametrize("damage", ["truncate", "flip", "swap", "remove"])
def test_a_damaged_file_is_named_not_loaded(tmp_path, name, damage):
    directory = runstate.write(tmp_path, _state(step=3))
    other = runstate.write(tmp_path, _state(step=5))
    path = directory / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # a flipped byte in the tensor data: safetensors alone would not notice
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "swap":  # a whole, valid file of another checkpoint
        path.write_bytes((other / name).read_bytes())
    else:
        path.unlink()
    with pytest.raises(runstate.CheckpointError, match=name) as e:
        runstate.read(directory)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, match", [
    ("", "unreadable"), ("{", "unreadable"), ("[]", "does not record a step"),
    ('{"step": 4, "format": "imagegen.checkpoint/1", "files": {}}', "says step 4"),
    ('{"step": 3, "format": "imagegen.checkpoint/1", "files": {}}', "lacks model.safetensors"),
    ('{"step": 3, "format": "other"}', "unknown format"),
])
def test_a_bad_trainer_json_is_named(tmp_path, text, match):
    directory = runstate.write(tmp_path, _state(step=3))
    (directory / "trainer.json").write_text(text)
    with pytest.raises(runstate.CheckpointError, match=match):
        runstate.read(directory)


def test_the_manifest_cannot_point_outside_the_checkpoint(tmp_path):
    directory = runstate.write(tmp_path, _state(step=3))
    record = json.loads((directory / "trainer.json").read_text())
    record["files"]["../../etc/passwd"] = {}
    (directory / "trainer.json").write_text(json.dumps(record))
    with pytest.raises(runstate.CheckpointError, match="bad file"):
        runstate.read(directory)


def test_a_full_disk_mid_checkpoint_is_one_line_and_leaves_nothing(tmp_path):
    runstate.write(tmp_path, _state(step=3, size=4))
    before = snapshot(tmp_path)
    with disk_full_after(4000), pytest.raises(ImagegenError, match="File too large") as e:
        runstate.write(tmp_path, _state(step=5, size=4000))
    assert "\n" not in str(e.value)
    assert snapshot(tmp_path) == before
