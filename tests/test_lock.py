"""One writer per run directory: the lock names its live holder, and a killed holder's lock is taken over."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen.errors import ImagegenError
from imagegen.lock import NAME, RunBusyError, RunLock

HOLD = ("import sys, time; sys.path.insert(0, sys.argv[1]); from imagegen.lock import RunLock; "
        "lock = RunLock.acquire(sys.argv[2]); print('locked', flush=True); time.sleep(120)")


def test_a_second_lock_fails_naming_the_holder_and_release_frees_it(tmp_path):
    lock = RunLock.acquire(tmp_path)
    record = json.loads((tmp_path / NAME).read_text())
    assert record["pid"] == os.getpid() and lock.stale is None
    with pytest.raises(RunBusyError, match=f"in use by pid {os.getpid()} on ") as e:
        RunLock.acquire(tmp_path)
    assert "\n" not in str(e.value)
    lock.release()
    assert not (tmp_path / NAME).exists()
    RunLock.acquire(tmp_path).release()


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(Path(__file__).parent.parent), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusyError, match=f"in use by pid {holder.pid} "):
            RunLock.acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock.acquire(tmp_path)  # the OS dropped the dead holder's flock; its record remains
    assert lock.stale["pid"] == holder.pid
    lock.release()


def test_an_unreadable_lock_file_is_taken_over_without_reading_code(tmp_path):
    (tmp_path / NAME).write_bytes(b"\x80\x04garbage")
    lock = RunLock.acquire(tmp_path)
    assert lock.stale is None and json.loads((tmp_path / NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_lock_file_unlinked_between_open_and_flock_is_not_trusted(tmp_path, monkeypatch):
    """A releasing holder unlinks the file; a trainer that opened it just before and then locks it holds
    a lock on a file no one else can see. It must notice (inode check) and lock the new file instead."""
    import imagegen.lock as lock_module

    real = lock_module.fcntl.flock
    calls = []

    def flock(fd, op):
        if not calls:
            (tmp_path / NAME).unlink()  # the holder's release lands here
        calls.append(op)
        return real(fd, op)

    (tmp_path / NAME).write_text("{}")
    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    lock = RunLock.acquire(tmp_path)
    monkeypatch.setattr(lock_module.fcntl, "flock", real)
    assert len(calls) == 2 and (tmp_path / NAME).exists()
    with pytest.raises(RunBusyError):
        RunLock.acquire(tmp_path)
    lock.release()


def test_holder_names_a_live_holder_and_writes_nothing(tmp_path):
    assert RunLock.holder(tmp_path) is None and not (tmp_path / NAME).exists()
    lock = RunLock.acquire(tmp_path)
    assert RunLock.holder(tmp_path)["pid"] == os.getpid()
    lock.release()
    (tmp_path / NAME).write_text(json.dumps({"pid": 1, "host": "h"}))  # left by a killed trainer
    assert RunLock.holder(tmp_path) is None


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_left_alone(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / NAME).symlink_to(victim)  # a run directory from elsewhere, crafted or careless
    with pytest.raises(ImagegenError, match="is a symbolic link") as e:
        RunLock.acquire(run)
    assert "\n" not in str(e.value)
    assert RunLock.holder(run) is None
    assert victim.read_text() == "precious"


def test_a_lock_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / NAME)
    with pytest.raises(ImagegenError, match="not a plain file"):
        RunLock.acquire(tmp_path)
    assert RunLock.holder(tmp_path) is None  # an open() for reading alone would block on it
