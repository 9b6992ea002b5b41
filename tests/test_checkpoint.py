"""Exported models: loading checks config.json and the weights' shapes; saving survives a full disk and
respects the umask; publishing swaps versions under a link so that a reader always finds a whole model."""

import json
import os
import threading

import pytest
import torch

from imagegen import checkpoint
from imagegen.errors import ImagegenError
from imagegen.models import build_model
from tests.hazards import Payload, disk_full_after, snapshot, write_payload


def _model(hidden=4):
    return build_model("gated_pixelcnn", channels=1, image_size=4, hidden=hidden, num_layers=1, out_hidden=4)


def _one_line_error(fn, match):
    with pytest.raises(ImagegenError, match=match) as e:
        fn()
    assert "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("config, match", [
    ({"step": 3}, "no model section"),
    ({"model": {"hidden": 4}}, "no model section"),
    ({"model": {"name": "nope", "channels": 1, "image_size": 4}}, "does not describe a model: unknown model"),
    ({"model": {"name": "gated_pixelcnn"}}, "does not describe a model"),
    ({"model": {"name": "gated_pixelcnn", "channels": 1, "image_size": 4, "hidden": "x"}},
     "does not describe a model"),
    ([1, 2], "no model section"),
    ({"model": {"name": "gated_pixelcnn", "channels": 1, "image_size": 4}, "val_size": "x"},
     "config.json: val_size must be null or an integer >= 0"),  # metadata eval passes on to the data
    ({"model": {"name": "gated_pixelcnn", "channels": 1, "image_size": 4}, "dataset": ["mnist"]},
     "config.json: dataset must be null or a string"),
])
def test_a_bad_config_json_is_one_line(tmp_path, config, match):
    checkpoint.save(_model(), tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    _one_line_error(lambda: checkpoint.load(tmp_path / "c"), match)


def test_weights_of_another_shape_are_one_line(tmp_path):
    checkpoint.save(_model(hidden=4), tmp_path / "c")
    info = json.loads((tmp_path / "c" / "config.json").read_text())
    info["model"]["hidden"] = 8
    (tmp_path / "c" / "config.json").write_text(json.dumps(info))
    _one_line_error(lambda: checkpoint.load(tmp_path / "c"), r"do not match config.json \(.* is \(")


@pytest.mark.parametrize("kind", ["pickle", "torch"])
@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_pickle_payload_in_a_checkpoint_runs_nothing(tmp_path, name, kind):
    checkpoint.save(_model(), tmp_path / "c")
    marker = tmp_path / "marker"
    write_payload(tmp_path / "c" / name, marker, kind)
    _one_line_error(lambda: checkpoint.load(tmp_path / "c"), "cannot read")
    assert not marker.exists()


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The payloads the tests plant are live: an unguarded load runs them."""
    import pickle

    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()
    write_payload(tmp_path / "x.bin", marker, "torch")
    torch.load(tmp_path / "x.bin", weights_only=False)
    assert marker.exists()


def test_a_full_disk_while_saving_is_one_line_and_leaves_the_old_model(tmp_path):
    checkpoint.save(_model(hidden=4), tmp_path / "c", step=1)
    before = snapshot(tmp_path)
    with disk_full_after(2000):  # the hidden-16 weights are larger than this
        _one_line_error(lambda: checkpoint.save(_model(hidden=16), tmp_path / "c", step=2), "File too large")
        _one_line_error(lambda: checkpoint.publish(_model(hidden=16), tmp_path / "c", step=2),
                        "File too large")
    assert snapshot(tmp_path) == before  # no temporary left, the old model whole


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        checkpoint.save(_model(), tmp_path / "saved")
        checkpoint.publish(_model(), tmp_path / "published")
    finally:
        os.umask(old)
    for folder in (tmp_path / "saved", (tmp_path / "published").resolve()):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
        for f in folder.iterdir():
            assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_publish_swaps_versions_under_a_link_and_a_reader_always_finds_a_whole_model(tmp_path):
    link = tmp_path / "model"
    checkpoint.publish(_model(), link, step=0)
    failures, done = [], threading.Event()

    def read():
        while not done.is_set():
            try:
                checkpoint.load(link)
            except ImagegenError as e:
                failures.append(str(e))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for step in range(1, 60):
            checkpoint.publish(_model(), link, step=step)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert link.is_symlink() and checkpoint.read_info(link)["step"] == 59
    versions = sorted(p.name for p in tmp_path.glob(".model.v-*"))
    assert len(versions) == 2 and os.readlink(link) in versions  # the current and the previous


def test_publish_replaces_a_plain_folder_and_falls_back_without_symlinks(tmp_path, monkeypatch):
    checkpoint.save(_model(), tmp_path / "model", step=1)  # as runs of earlier versions exported
    checkpoint.publish(_model(), tmp_path / "model", step=2)
    assert (tmp_path / "model").is_symlink() and checkpoint.read_info(tmp_path / "model")["step"] == 2

    def no_symlinks(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    checkpoint.publish(_model(), tmp_path / "model", step=3)
    assert not (tmp_path / "model").is_symlink() and checkpoint.read_info(tmp_path / "model")["step"] == 3
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _edited(tmp_path, **changes):
    checkpoint.save(_model(), tmp_path / "c")
    info = json.loads((tmp_path / "c" / "config.json").read_text())
    info["model"].update(changes)
    (tmp_path / "c" / "config.json").write_text(json.dumps(info))
    return tmp_path / "c"


def test_enormous_sizes_in_config_json_allocate_nothing(tmp_path):
    wide = _edited(tmp_path / "wide", hidden=100_000)  # terabytes of weights: refused, not allocated
    _one_line_error(lambda: checkpoint.load(wide), r"match config.json \(.* is \(8, 1, 3, 7\), not \(2")


def test_a_deep_config_json_is_stopped_at_the_size_of_its_weights(tmp_path):
    deep = _edited(tmp_path / "deep", num_layers=20_000)  # would take minutes and GBs to build
    _one_line_error(lambda: checkpoint.load(deep), r"a model of over \d+ parameter tensors; the weights file")


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64])
def test_weights_of_another_kind_are_refused(tmp_path, dtype):
    from safetensors.torch import load_file, save_file

    checkpoint.save(_model(), tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    save_file({k: v.to(dtype) for k, v in load_file(weights).items()}, weights)
    _one_line_error(lambda: checkpoint.load(tmp_path / "c"), f"holds {str(dtype)[6:]}, not floating values")


def test_a_deeply_nested_config_json_is_one_line(tmp_path):
    checkpoint.save(_model(), tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("[" * 100_000)
    _one_line_error(lambda: checkpoint.load(tmp_path / "c"), "nested too deeply")


def test_a_run_or_its_training_checkpoint_is_pointed_to_its_model(tmp_path):
    (tmp_path / "run" / "checkpoints" / "step_00000003").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model: {name: pixelcnn}\n")
    (tmp_path / "run" / "checkpoints" / "step_00000003" / "trainer.json").write_text("{}")
    says = f"give its run's model folder, {tmp_path / 'run' / 'model'}"
    for given in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "step_00000003"):
        _one_line_error(lambda g=given: checkpoint.load(g), says)


def test_a_folder_put_back_when_its_replacement_is_interrupted(tmp_path, monkeypatch):
    from imagegen import durable

    checkpoint.save(_model(), tmp_path / "c", step=1)
    before = snapshot(tmp_path / "c")
    real, calls = os.replace, []

    def replace(src, dst):  # Ctrl-C after the old folder was moved aside, before the new one moved in
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(durable.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(_model(hidden=8), tmp_path / "c", step=2)
    monkeypatch.undo()
    assert snapshot(tmp_path / "c") == before and [p.name for p in tmp_path.iterdir()] == ["c"]
