"""A run directory is data, has one writer, and a failed or resumed command leaves it exact: crafted files
run nothing, a failed resume changes nothing, resume falls back past damaged checkpoints and says so,
settings changed on resume are recorded, the metrics log has no repeats, and runs written by earlier
versions (accelerate's pickles) resume exactly without unpickling."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from imagegen import checkpoint, cli
from imagegen.config import from_dict
from imagegen.errors import ConfigError, ImagegenError
from imagegen.lock import RunBusyError
from imagegen.training import Trainer, lr_factor
from tests.hazards import disk_full_after, snapshot, write_payload
from tests.helpers import metrics_without_timings, tiny_config, tiny_mnist, without_timings

# Every kind of file a run holds, and whether resuming must fail when it is damaged in every checkpoint.
KINDS = {"config.yaml": True, "segments.jsonl": True, "metrics.jsonl": True,
         "checkpoints/*/model.safetensors": True, "checkpoints/*/optimizer.safetensors": True,
         "checkpoints/*/ema.safetensors": True, "checkpoints/*/rng.safetensors": True,
         "checkpoints/*/trainer.json": True, "samples/*.png": False, "model/config.json": False,
         "model/model.safetensors": False, "best/config.json": False, "best/model.safetensors": False,
         "run.lock": False}


def _kind(relative: str) -> str:
    parts = relative.split("/")
    if parts[0] == "checkpoints":
        parts[1] = "*"
    if parts[0] == "samples":
        parts[1] = "*.png"
    return "/".join(parts)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_mnist(tmp_path_factory.mktemp("data") / "mnist.npz")


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A run of 3 steps resumed to 6 (so it has a segment), with samples; checkpoints at 3 and 6."""
    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(tiny_config(data, max_steps=3, sample_every=3), run, show_progress=False).fit()
    Trainer(tiny_config(data, max_steps=6, sample_every=3), run, resume=True, show_progress=False).fit()
    return run


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, symlinks=True)
    return to


def _resume(data, run, **train):
    """A trainer resuming ``run`` (finished at step 6) with two more steps to go, unless ``train`` says."""
    return Trainer(tiny_config(data, **{"max_steps": 8, "sample_every": 3, **train}), run, resume=True,
                   show_progress=False)


def _files(run: Path, kind: str) -> list[Path]:
    if kind == "run.lock":
        return [run / "run.lock"]
    return [p for p in run.rglob("*") if p.is_file() and _kind(str(p.relative_to(run))) == kind] + \
        ([run / kind] if kind.startswith(("model/", "best/")) else [])


def test_the_fault_tests_cover_every_kind_of_file(finished):
    kinds = {_kind(str(p.relative_to(finished))) for p in finished.rglob("*") if p.is_file()
             and not p.relative_to(finished).parts[0].startswith((".model.v-", ".best.v-"))}
    kinds |= {f"{link}/{p.name}" for link in ("model", "best") for p in (finished / link).iterdir()}
    assert kinds <= KINDS.keys(), kinds - KINDS.keys()


@pytest.mark.parametrize("payload", ["pickle", "torch"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_pickle_payload_in_any_file_of_a_run_runs_nothing(data, finished, tmp_path, kind, payload):
    run = _copy(finished, tmp_path / "run")
    marker = tmp_path / "marker"
    for path in _files(run, kind):
        write_payload(path, marker, payload)
    before = snapshot(run)
    if KINDS[kind]:
        with pytest.raises(ImagegenError) as e:
            _resume(data, run)
        assert "\n" not in str(e.value), str(e.value)
        assert snapshot(run) == before  # the failed resume changed nothing
    else:  # not read on resume: outputs (written again) or a lock (taken over)
        _resume(data, run).close()
    assert not marker.exists()


def test_a_refused_resume_is_one_line_on_the_command_line_and_exit_2(data, finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    for path in _files(run, "checkpoints/*/optimizer.safetensors"):
        write_payload(path, tmp_path / "marker", "torch")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, max_steps=8, sample_every=3).to_dict()))
    result = CliRunner().invoke(cli.main, ["train", str(config), "--output-dir", str(run), "--resume"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no usable checkpoint"), result.stderr


def test_a_failed_command_changes_nothing(data, finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    before = snapshot(run)
    wider = tiny_config(data, max_steps=6, sample_every=3)
    wider.model["hidden"] = 8
    with pytest.raises(ConfigError, match="model.hidden is 8 here but 4 in the run") as e:
        Trainer(wider, run, resume=True, show_progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(ImagegenError, match="already holds a run: pass --resume"):
        Trainer(tiny_config(data), run, show_progress=False)
    assert snapshot(run) == before
    with pytest.raises(ImagegenError, match="nothing to resume in"):
        Trainer(tiny_config(data), tmp_path / "missing", resume=True, show_progress=False)
    assert not (tmp_path / "missing").exists()


def test_a_second_trainer_is_refused_while_the_first_holds_the_run(data, finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    first = _resume(data, run)
    with pytest.raises(RunBusyError, match="in use by pid"):
        _resume(data, run)
    first.close()
    (run / "run.lock").write_text(json.dumps({"pid": 999999, "host": "elsewhere", "since": "then"}))
    second = _resume(data, run)  # a lock file nobody holds: left by a killed trainer
    assert any("took over the lock of pid 999999 on elsewhere" in n for n in second.notes)
    second.close()


def test_changed_length_and_lr_are_recorded_as_a_segment(data, finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    config = (run / "config.yaml").read_bytes()
    _resume(data, run, max_steps=8, lr=1e-3).close()
    segments = [json.loads(line) for line in (run / "segments.jsonl").read_text().splitlines()]
    assert segments[-1] == {"step": 6, "changes": {"train.lr": [3e-3, 1e-3], "train.max_steps": [6, 8]}}
    trainer = _resume(data, run, max_steps=8, lr=1e-3)  # the same settings again: nothing new
    assert len((run / "segments.jsonl").read_text().splitlines()) == len(segments)
    trainer.fit()
    assert (run / "config.yaml").read_bytes() == config  # the original, never rewritten
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3 * lr_factor(7, trainer.config)  # the new lr


def test_resume_reads_the_data_from_a_new_place(data, finished, tmp_path, monkeypatch):
    """data.path may change on resume: to another copy, or to none (the data root, as shipped configs)."""
    run = _copy(finished, tmp_path / "run")
    (tmp_path / "root" / "mnist").mkdir(parents=True)
    moved = shutil.copy(data, tmp_path / "root" / "mnist" / "mnist.npz")
    _resume(moved, run, max_steps=7).fit()
    monkeypatch.setenv("IMAGEGEN_DATA", str(tmp_path / "root"))
    shipped = {**tiny_config(data, max_steps=8, sample_every=3).to_dict(), "data": {"name": "mnist"}}
    resumed = Trainer(from_dict(shipped), run, resume=True, show_progress=False)
    resumed.fit()
    segments = [json.loads(line)["changes"] for line in (run / "segments.jsonl").read_text().splitlines()]
    assert segments[-2:] == [{"data.path": [str(data), str(moved)], "train.max_steps": [6, 7]},
                             {"data.path": [str(moved), None], "train.max_steps": [7, 8]}]
    assert resumed.step == 8


@pytest.mark.parametrize("damage", ["truncate", "swap_rng"])
def test_resume_falls_back_past_a_damaged_latest_checkpoint_and_says_so(data, finished, tmp_path, capsys,
                                                                        damage):
    run = _copy(finished, tmp_path / "run")
    latest, previous = run / "checkpoints" / "step_00000006", run / "checkpoints" / "step_00000003"
    expected = {p.name: p.read_bytes() for p in latest.iterdir()}
    if damage == "truncate":
        data_ = (latest / "optimizer.safetensors").read_bytes()
        (latest / "optimizer.safetensors").write_bytes(data_[:100])
        name = "optimizer.safetensors"
    else:  # a whole, valid generator file, but another step's
        shutil.copy(previous / "rng.safetensors", latest / "rng.safetensors")
        name = "rng.safetensors"
    trainer = _resume(data, run, max_steps=6)
    assert trainer.step == 3
    note = f"checkpoint step_00000006 is unusable ({name} does not match its checksum"
    assert any(n.startswith(note) and n.endswith("resuming from step_00000003") for n in trainer.notes)
    assert note in capsys.readouterr().err
    assert (run / "checkpoints" / "unusable-step_00000006").is_dir()
    assert max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()) == 3
    trainer.fit()
    for name, content in expected.items():  # steps 4-6 again: the same state, byte for byte
        assert without_timings(name, (latest / name).read_bytes()) == without_timings(name, content), name


def _metrics(run):
    return metrics_without_timings((run / "metrics.jsonl").read_text())


def test_the_metrics_log_is_exact_after_a_crash(data, tmp_path, monkeypatch):
    Trainer(tiny_config(data, log_every=2), tmp_path / "a", show_progress=False).fit()
    crashing = Trainer(tiny_config(data, log_every=2), tmp_path / "b", show_progress=False)
    save = Trainer.save

    def crash_at_6(self):
        if self.step == 6:  # after steps 4-6 were logged and evaluated, before their checkpoint
            raise KeyboardInterrupt
        return save(self)

    monkeypatch.setattr(Trainer, "save", crash_at_6)
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    monkeypatch.setattr(Trainer, "save", save)
    assert max(r["step"] for r in _metrics(tmp_path / "b")) == 6
    Trainer(tiny_config(data, log_every=2), tmp_path / "b", resume=True, show_progress=False).fit()
    assert _metrics(tmp_path / "b") == _metrics(tmp_path / "a")  # loss windows straddling the crash too


def test_a_full_disk_during_training_is_one_line_leaves_nothing_half_written_and_resumes(data, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(data), run, show_progress=False)
    with disk_full_after(15_000), pytest.raises(ImagegenError, match="cannot write .*File too large") as e:
        trainer.fit()  # the optimizer state (24 kB) does not fit
    assert "\n" not in str(e.value)
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name] and not (run / "run.lock").exists()
    assert not (run / "checkpoints").exists() or not list((run / "checkpoints").iterdir())
    Trainer(tiny_config(data), run, resume=True, show_progress=False).fit()
    assert checkpoint.read_info(run / "model")["step"] == 6


def _dropout_config(data, **train):
    config = tiny_config(data, **train)
    config.model = dict(name="transformer_1d", hidden=8, num_layers=1, num_heads=2, ffn_hidden=8,
                        block_length=16, memory_length=16, dropout=0.3)
    return config


def _legacy_run(data, run: Path) -> None:
    """A run as earlier versions wrote it, stopped at step 3: accelerate's save_state layout (pickled
    scheduler, EMA and RNG states), a plain model folder, and a metrics log with repeated records."""
    from torch.optim.lr_scheduler import LambdaLR

    trainer = Trainer(_dropout_config(data), run, show_progress=False)
    for _ in range(3):
        trainer.train_step()
    trainer.evaluate()  # as fit does before a checkpoint (building the eval copy draws random numbers)
    acc = trainer.accelerator
    acc.register_for_checkpointing(LambdaLR(trainer.optimizer.optimizer, lambda s: 1.0))
    acc.register_for_checkpointing(trainer.ema)
    acc.save_state(str(run / "checkpoints" / "step_00000003"))
    (run / "checkpoints" / "step_00000003" / "trainer.json").write_text(json.dumps({"step": 3}))
    trainer.step = 3
    checkpoint.save(trainer.eval_model, run / "model", step=3)
    records = [{"step": s, "loss": float(s)} for s in (1, 2, 3, 4)] + [{"step": 3, "eval_bpd": 8.0}]
    records += [{"step": 4, "loss": 4.5}]  # logged again by a resume of an earlier version
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    trainer.close()


def test_a_run_of_earlier_versions_resumes_exactly_without_unpickling(data, tmp_path):
    straight = Trainer(_dropout_config(data), tmp_path / "a", show_progress=False)
    straight.fit()
    run = tmp_path / "b"
    _legacy_run(data, run)
    assert {p.name for p in (run / "checkpoints" / "step_00000003").iterdir()} == {
        "model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl",
        "random_states_0.pkl", "trainer.json"}
    resumed = Trainer(_dropout_config(data), run, resume=True, show_progress=False)
    assert resumed.step == 3 and any("accelerate layout" in n for n in resumed.notes)
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3, 3]  # past the checkpoint and repeats: gone
    resumed.fit()
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "a" / "checkpoints" / "step_00000006" / name)
        b = load_file(run / "checkpoints" / "step_00000006" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (run / "model").is_symlink() and checkpoint.read_info(run / "model")["step"] == 6


@pytest.mark.parametrize("name", ["optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl",
                                  "random_states_0.pkl", "model.safetensors", "trainer.json"])
def test_a_pickle_payload_in_a_run_of_earlier_versions_runs_nothing(data, tmp_path, name):
    run = tmp_path / "run"
    _legacy_run(data, run)
    marker = tmp_path / "marker"
    write_payload(run / "checkpoints" / "step_00000003" / name, marker, "torch")
    before = snapshot(run)
    with pytest.raises(ImagegenError) as e:
        Trainer(_dropout_config(data), run, resume=True, show_progress=False)
    assert "\n" not in str(e.value) and not marker.exists()
    assert snapshot(run) == before


def test_logs_are_never_read_or_appended_through_a_link(data, finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    victim = tmp_path / "victim.jsonl"
    victim.write_bytes((run / "metrics.jsonl").read_bytes())  # a log it would happily append to
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    before = snapshot(run)
    with pytest.raises(ImagegenError, match="not a plain file") as e:
        _resume(data, run)
    assert "\n" not in str(e.value)
    assert snapshot(run) == before and victim.read_bytes() == (finished / "metrics.jsonl").read_bytes()


def test_resume_refuses_data_of_another_shape_or_other_images(data, finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    before = snapshot(run)
    wider = tiny_mnist(tmp_path / "wide.npz", size=12)  # a gated PixelCNN's weights fit any image size
    with pytest.raises(ImagegenError, match=r"image_size \[8, 8\] then, \[12, 12\] now"):
        Trainer(tiny_config(wider, max_steps=8, sample_every=3), run, resume=True, show_progress=False)
    other = tiny_mnist(tmp_path / "other.npz", seed=1)  # the same shape, other images
    with pytest.raises(ImagegenError, match="does not hold the images the run trained on"):
        Trainer(tiny_config(other, max_steps=8, sample_every=3), run, resume=True, show_progress=False)
    assert snapshot(run) == before
    moved = tmp_path / "moved.npz"
    shutil.copy(data, moved)  # the same images elsewhere: data.path may change
    Trainer(tiny_config(moved, max_steps=8, sample_every=3), run, resume=True, show_progress=False).close()


def test_a_run_whose_last_export_was_cut_short_is_exported_again(data, finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    (run / "model").unlink()  # killed after its last checkpoint, before the model was published
    trainer = _resume(data, run, max_steps=6)
    assert any("export was cut short" in n for n in trainer.notes)
    assert trainer.fit() == {"step": 6, "eval_bpd": checkpoint.read_info(finished / "model")["eval_bpd"]}
    assert checkpoint.read_info(run / "model")["step"] == 6
    exported, expected = (load_file(r / "model" / "model.safetensors") for r in (run, finished))
    assert exported.keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in exported.items())
    with pytest.raises(ImagegenError, match="at step 6 already"):
        _resume(data, run, max_steps=6)


def _rewrite_latest(run: Path, edit) -> None:
    """Change the state in the run's newest checkpoint with ``edit(state)`` and write it back whole (a
    valid manifest: what a crafted run directory would hold)."""
    from imagegen import runstate

    latest = runstate.list_checkpoints(run / "checkpoints")[-1]
    state = runstate.read(latest)
    edit(state)
    shutil.rmtree(latest)
    runstate.write(run / "checkpoints", state)


def _betas(state):
    state.optimizer["param_groups"][0]["betas"] = ("x", 0.5)


def _integer_moments(state):
    moments = state.optimizer["state"][0]
    moments["exp_avg"] = moments["exp_avg"].long()


HOSTILE_STATES = {
    "a generator state of another length": lambda s: s.rng.update(cpu=s.rng["cpu"][:, :100]),
    "a generator state that is not uint8 rows": lambda s: s.rng.update(cpu=s.rng["cpu"][0].float()),
    "optimizer betas that are not numbers": _betas,
    "integer optimizer moments": _integer_moments,
    "EMA weights that are not tensors": lambda s: setattr(s, "ema", {"n_averaged": "x"}),
}


@pytest.mark.parametrize("edit", HOSTILE_STATES.values(), ids=HOSTILE_STATES.keys())
def test_a_crafted_training_state_is_one_line_and_changes_nothing(data, finished, tmp_path, edit):
    run = _copy(finished, tmp_path / "run")
    for older in (run / "checkpoints").glob("step_00000003"):
        shutil.rmtree(older)  # no checkpoint to fall back on
    _rewrite_latest(run, edit)
    before = snapshot(run)
    with pytest.raises(ImagegenError) as e:
        _resume(data, run)
    assert "\n" not in str(e.value), str(e.value)
    assert snapshot(run) == before


def test_the_loser_of_two_new_runs_is_told_who_holds_the_directory(data, tmp_path, monkeypatch):
    from imagegen.lock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    winner = RunLock.acquire(run)  # started a moment earlier: it holds the lock and wrote its config
    (run / "config.yaml").write_text("model: {name: gated_pixelcnn}\n")
    holder, calls = RunLock.holder, []  # the first look finds no holder: it took the lock just after
    monkeypatch.setattr(RunLock, "holder", lambda d: holder(d) if calls.append(d) or len(calls) > 1 else None)
    with pytest.raises(RunBusyError, match="in use by pid"):  # not "pass --resume": it is still training
        Trainer(tiny_config(data), run, show_progress=False)
    winner.release()


def test_a_log_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    import threading

    from imagegen import rundir

    fifo = tmp_path / "metrics.jsonl"
    os.mkfifo(fifo)
    writer = threading.Timer(2.0, lambda: os.close(os.open(fifo, os.O_WRONLY)))  # unblocks a blocked reader
    writer.start()
    try:
        with pytest.raises(ImagegenError, match="not a plain file"):
            rundir.read_log(fifo)
    finally:
        writer.cancel()


KILLED_WRITING_A_GRID = """
import os, sys, torch
from imagegen import imageio
os.replace = lambda src, dst: os._exit(9)  # killed with the grid written to its temporary, not renamed
imageio.save_grid(torch.zeros(1, 1, 4, 4, dtype=torch.long), sys.argv[1])
"""


def test_a_grid_cut_short_leaves_a_temporary_the_next_trainer_clears(tmp_path):
    import os
    import subprocess
    import sys

    from imagegen import rundir

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    grid = run / "samples" / "step_00000003.png"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITING_A_GRID, str(grid)],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert killed.returncode == 9
    assert len(list((run / "samples").iterdir())) == 1  # the temporary
    assert len(rundir.remove_temporaries(run)) == 1 and not list((run / "samples").iterdir())
