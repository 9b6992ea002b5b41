"""Feed the real ``imagegen`` command a battery of bad inputs and faults; write docs/reliability.md.

    python scripts/check_bad_inputs.py [--out docs/reliability.md] [--jobs 2] [--only WORD]

Every case runs ``python -m imagegen.cli ...`` as a subprocess in a fresh temporary directory
holding copies of the small checkpoints, data, images and configs this script makes (an 8x8
MNIST-like set and tiny models, so the whole battery takes a few minutes on 2 CPU cores). The
directory is snapshotted (every file's size, hash and mode) before and after, and the case fails if

* the output holds a Python traceback;
* bad input does not give exit code 2 and exactly one ``error:`` line, or writes any file;
* a fault (disk full, kill -9, Ctrl-C, two writers) exits 0 when it should not;
* a file that existed before is changed or removed (unless the case is meant to change it), or a
  file left at its final name cannot be read back (a half-written image, JSON or safetensors);
* the case's own check fails (for example: after kill -9 in the middle of a checkpoint save, the
  run still loads and resumes).

Cases marked "rundir" test run-directory guarantees (a lock against two writers, no pickles, saves
that survive kill -9) that another branch provides; they may fail before it is merged. The report,
docs/reliability.md, is written from the results; the script exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import pickle
import platform
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import markdown_table  # noqa: E402

# --- one case ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    note: str = ""  # what a custom runner did (e.g. "killed while a temp file existed")


@dataclass
class Case:
    """One bad input or fault.

    ``expect``: "bad" (exit 2, one ``error:`` line, nothing written), "fault" (non-zero exit, nothing
    damaged), "ok" (exit 0: a hostile-looking input that is fine, e.g. a 16-bit PNG), or "any" (only
    the traceback, damage and ``check`` criteria apply).
    """

    command: str
    what: str
    args: list[str]
    assets: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None
    expect: str = "bad"
    runner: Callable[[Case, Path, list[str], dict], Outcome] | None = None
    check: Callable[[Path, Outcome], str | None] | None = None
    may_change: tuple[str, ...] = ()  # glob patterns (relative paths) the case may add, change or remove
    fsize: int | None = None  # RLIMIT_FSIZE of the child, bytes: "disk full" for files beyond it
    rundir: bool = False
    timeout: float = 180


@dataclass
class Result:
    case: Case
    outcome: Outcome
    files: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --- assets: small checkpoints, data, images and configs ------------------------------------------

BASE_CONFIG = {
    "model": {"name": "gated_pixelcnn", "hidden": 4, "num_layers": 2, "out_hidden": 4},
    "data": {"name": "mnist", "path": "mnist.npz", "val_size": 8},
    "train": {"batch_size": 4, "max_steps": 2, "warmup_steps": 1, "eval_every": 2, "eval_images": 4,
              "sample_every": 0, "checkpoint_every": 2, "log_every": 1},
}


def tiny_mnist(path: Path, n_train: int = 64, n_test: int = 16, size: int = 8) -> None:
    """An MNIST-format npz of ``size x size`` blobs on black."""
    rng = np.random.default_rng(0)

    def images(n):
        x = np.zeros((n, size, size), np.uint8)
        for k in range(n):
            r, c = rng.integers(1, size - 3, 2)
            x[k, r : r + 3, c : c + 2] = rng.integers(128, 256)
        return x

    np.savez(path, x_train=images(n_train), y_train=rng.integers(0, 10, n_train).astype(np.uint8),
             x_test=images(n_test), y_test=rng.integers(0, 10, n_test).astype(np.uint8))


def png_with_size(path: Path, width: int, height: int) -> None:
    """A 1x1 grey PNG whose header claims ``width x height`` (a decompression bomb's header)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))


def make_assets(root: Path, env: dict, runs: set[str]) -> None:
    """Write every file the cases copy from into ``root``, and train the ``runs`` they need (``run``
    from tiny.yaml, ``bigrun`` from big.yaml)."""
    import torch

    from imagegen import checkpoint
    from imagegen.models import build_model

    torch.manual_seed(0)
    small = dict(channels=1, image_size=8, hidden=4, num_layers=2, out_hidden=4)

    def save(name, model, **info):
        checkpoint.save(model, root / name, **{"dataset": "mnist", "val_size": 8, **info})

    save("ckpt", build_model("gated_pixelcnn", **small))
    save("ckpt_cond", build_model("gated_pixelcnn", num_classes=10, **small))
    save("ckpt_cond5", build_model("gated_pixelcnn", num_classes=5, **small))
    sr = dict(upscale_factor=2, cond_features=4, cond_layers=1)
    save("ckpt_sr", build_model("gated_pixelcnn_sr", **sr, **small))
    save("ckpt_noval", build_model("gated_pixelcnn", **small), val_size=0)
    checkpoint.save(build_model("gated_pixelcnn", **small), root / "ckpt_nodataset")
    for name, value in (("ckpt_nan", float("nan")), ("ckpt_inf", float("inf"))):
        model = build_model("gated_pixelcnn", **small)
        with torch.no_grad():
            model.head.weight[0, 0, 0] = value
        save(name, model)
    overflow = build_model("gated_pixelcnn", **small)  # finite weights whose logits overflow to inf
    with torch.no_grad():
        overflow.head.weight.fill_(3e38)
        overflow.out.bias.fill_(1.0)
    save("ckpt_overflow", overflow)

    tiny_mnist(root / "mnist.npz")
    digits = np.load(root / "mnist.npz")["x_test"]
    Image.fromarray(digits[0]).save(root / "digit.png")
    Image.fromarray(digits[1]).save(root / "digit_b.png")
    Image.fromarray(digits[0][::2, ::2]).save(root / "small.png")
    Image.fromarray(np.kron(digits[0], np.ones((2, 2), np.uint8))).save(root / "big.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(root / "g16.png")  # 64 levels
    png = (root / "digit.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "badcrc.png").write_bytes(png[:29] + bytes([png[29] ^ 0xFF]) + png[30:])
    (root / "noise.png").write_bytes(np.random.default_rng(1).bytes(300))
    (root / "empty.png").write_bytes(b"")
    png_with_size(root / "bomb.png", 60_000, 60_000)
    (root / "folder").mkdir()
    Image.fromarray(digits[2]).save(root / "folder" / "a.png")
    (root / "folder" / "b.png").write_bytes(png[:40])

    (root / "tiny.yaml").write_text(yaml.safe_dump(BASE_CONFIG, sort_keys=False))
    big = {**BASE_CONFIG, "model": {**BASE_CONFIG["model"], "hidden": 128, "num_layers": 6, "out_hidden": 64}}
    (root / "big.yaml").write_text(yaml.safe_dump(big, sort_keys=False))
    for config, run in (("tiny.yaml", "run"), ("big.yaml", "bigrun")):
        if run not in runs:
            continue
        done = subprocess.run([sys.executable, "-m", "imagegen.cli", "train", config, "--output-dir", run],
                              cwd=root, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            sys.exit(f"error: could not train the asset run {run}: {done.stderr.strip()[-500:]}")


# --- preparing a case directory ----------------------------------------------------------------


def config(edit: Callable[[dict], None] | None = None, text: str | None = None, name: str = "c.yaml"):
    """A ``prepare`` writing ``name``: the base config changed by ``edit``, or ``text`` verbatim."""

    def prepare(d: Path) -> None:
        if text is not None:
            (d / name).write_text(text)
            return
        c = json.loads(json.dumps(BASE_CONFIG))
        edit(c)
        (d / name).write_text(yaml.safe_dump(c, sort_keys=False))

    return prepare


BASE = config(lambda c: None)


def setting(section: str, key: str, value) -> Callable[[dict], None]:
    return lambda c: c[section].__setitem__(key, value)


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def prepare(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data.encode() if isinstance(data, str) else data)

    return prepare


def edit_json(name: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def prepare(d: Path) -> None:
        info = json.loads((d / name).read_text())
        edit(info)
        (d / name).write_text(json.dumps(info))

    return prepare


def both(*prepares: Callable[[Path], None]) -> Callable[[Path], None]:
    def prepare(d: Path) -> None:
        for p in prepares:
            p(d)

    return prepare


def old_output(name: str = "out.png") -> Callable[[Path], None]:
    """An existing output file that a failing command must leave as it is."""
    return lambda d: Image.new("L", (5, 5), 77).save(d / name)


class Evil:
    """Unpickling this creates the file PWNED: loading a run must never unpickle."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def plant_pickles(d: Path) -> None:
    """Replace every file of the run's newest checkpoint that is not JSON or safetensors (and add
    two) with a pickle that would create ``PWNED`` when loaded."""
    newest = sorted((d / "run" / "checkpoints").glob("step_*"))[-1]
    evil = pickle.dumps(Evil())
    for f in newest.rglob("*"):
        if f.is_file() and f.suffix not in (".json", ".safetensors"):
            f.write_bytes(evil)
    for name in ("optimizer.bin", "random_states_0.pkl"):
        (newest / name).write_bytes(evil)


def big_run(d: Path) -> None:
    """The larger model's run (saves slow enough to be caught mid-write) as ``run``, config ``c.yaml``."""
    (d / "bigrun").rename(d / "run")
    shutil.copy(d / "big.yaml", d / "c.yaml")


def alias_bomb(levels: int = 9) -> str:
    """A YAML config whose train.lr is a list of nested aliases: 9**levels strings once expanded."""
    lines = ['    - &a0 ["laugh", "laugh", "laugh", "laugh", "laugh", "laugh", "laugh", "laugh", "laugh"]']
    lines += [f"    - &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, levels + 1)]
    return "model: {name: gated_pixelcnn}\ndata: {path: mnist.npz}\ntrain:\n  lr:\n" + "\n".join(lines) + "\n"


def weights_as(dtype: str) -> Callable[[Path], None]:
    """The checkpoint's weights stored as another dtype (same names and shapes)."""

    def prepare(d: Path) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        path = d / "ckpt" / "model.safetensors"
        save_file({k: v.to(getattr(torch, dtype)) for k, v in load_file(path).items()}, path)

    return prepare


def safetensors_header(header: bytes, length: int | None = None) -> Callable[[Path], None]:
    """A model.safetensors that is only a header (its length field ``length``, default the header's)."""
    raw = struct.pack("<Q", len(header) if length is None else length) + header
    return write("ckpt/model.safetensors", raw + b"\0" * 16)


def rewrite_state(edit: Callable) -> Callable[[Path], None]:
    """The run's checkpoints replaced by one whose state ``edit`` changed, with a valid manifest (what a
    crafted run directory holds)."""

    def prepare(d: Path) -> None:
        from imagegen import runstate

        found = runstate.list_checkpoints(d / "run" / "checkpoints")
        state = runstate.read(found[-1])
        edit(state)
        for f in found:
            shutil.rmtree(f)
        runstate.write(d / "run" / "checkpoints", state)

    return prepare


def link(name: str, target: str) -> Callable[[Path], None]:
    """Replace ``name`` by a symlink to ``target`` (a file outside the run that must stay as it is)."""

    def prepare(d: Path) -> None:
        (d / target).write_text("precious\n")
        (d / name).unlink(missing_ok=True)
        (d / name).symlink_to(d / target)

    return prepare


def mkfifo(name: str) -> Callable[[Path], None]:
    return lambda d: os.mkfifo(d / name)


# --- custom runners and checks -------------------------------------------------------------------


def popen(cmd: list[str], d: Path, env: dict, fsize: int | None = None) -> subprocess.Popen:
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))) if fsize else None
    return subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit)


def temp_files(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if "tmp" in p.name and p.name.startswith(".")]


def signal_while_writing(signum: int) -> Callable[[Case, Path, list[str], dict], Outcome]:
    """A runner that starts the command and sends ``signum`` the moment a temporary file or folder
    appears (a save in progress)."""
    name = signal.Signals(signum).name

    def runner(case: Case, d: Path, cmd: list[str], env: dict) -> Outcome:
        proc = popen(cmd, d, env)
        before = set(temp_files(d))
        sent = False
        deadline = time.time() + case.timeout
        while proc.poll() is None and time.time() < deadline:
            if set(temp_files(d)) - before:
                proc.send_signal(signum)
                sent = True
                break
            time.sleep(0.002)
        out, err = proc.communicate()
        return Outcome(proc.returncode, out, err, f"{name} while a save was in progress" if sent
                       else "not exercised: the command ended before a save was seen")

    return runner


kill_while_writing = signal_while_writing(signal.SIGKILL)


def signal_while_busy(signum: int) -> Callable[[Case, Path, list[str], dict], Outcome]:
    """A runner that starts the command and sends ``signum`` a second after torch is loaded
    (mid-sampling)."""
    name = signal.Signals(signum).name

    def runner(case: Case, d: Path, cmd: list[str], env: dict) -> Outcome:
        proc = popen(cmd, d, env)
        deadline = time.time() + case.timeout
        while proc.poll() is None and time.time() < deadline:
            try:
                if "libtorch_cpu" in Path(f"/proc/{proc.pid}/maps").read_text():
                    break
            except OSError:
                pass
            time.sleep(0.05)
        time.sleep(1.0)
        sent = proc.poll() is None
        if sent:
            proc.send_signal(signum)
        out, err = proc.communicate()
        note = f"{name} mid-run" if sent else "not exercised: it ended first"
        return Outcome(proc.returncode, out, err, note)

    return runner


interrupt_while_busy = signal_while_busy(signal.SIGINT)


def exit_code(code: int) -> Callable[[Path, Outcome], str | None]:
    return lambda d, o: None if o.rc == code else f"exit {o.rc}, not {code}"


def all_of(*checks: Callable[[Path, Outcome], str | None]) -> Callable[[Path, Outcome], str | None]:
    def check(d: Path, outcome: Outcome) -> str | None:
        return next((p for p in (c(d, outcome) for c in checks) if p), None)

    return check


def no_temporaries(d: Path, outcome: Outcome) -> str | None:
    """Nothing a writer left behind: no temporaries, no lock file (the command cleaned up on its way out)."""
    left = [str(p.relative_to(d)) for p in temp_files(d)] + \
        [str(p.relative_to(d)) for p in d.rglob("run.lock")]
    return f"left behind {', '.join(left[:3])}" if left else None


def two_at_once(case: Case, d: Path, cmd: list[str], env: dict) -> Outcome:
    """Run the same command twice at the same time; the outcome is the worse of the two (the
    non-zero exit code, if any), with both messages."""
    procs = [popen(cmd, d, env) for _ in range(2)]
    outs = [p.communicate(timeout=case.timeout) for p in procs]
    codes = [p.returncode for p in procs]
    worst = max(range(2), key=lambda k: (codes[k] != 0, codes[k]))
    note = f"exit codes {codes[0]} and {codes[1]}"
    stderr = outs[worst][1] + "".join(o[1] for k, o in enumerate(outs) if k != worst)
    return Outcome(codes[worst], outs[worst][0], stderr, note)


def one_refused(d: Path, outcome: Outcome) -> str | None:
    """Of two writers of one run, exactly one must train and the other be refused (exit 2)."""
    if outcome.note != "exit codes 0 and 2" and outcome.note != "exit codes 2 and 0":
        return f"two writers gave {outcome.note}: one should train, the other be refused with exit 2"
    return run_is_sound(d, outcome)


def run_is_sound(d: Path, outcome: Outcome) -> str | None:
    """The run in ``d/run`` still loads (its exported model) and resumes to a later step."""
    from imagegen import checkpoint

    try:
        checkpoint.load(d / "run" / "model")
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        return f"run/model does not load afterwards ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    again = subprocess.run([sys.executable, "-m", "imagegen.cli", "train", "c.yaml", "--output-dir", "run",
                            "--resume", "--max-steps", "6"], cwd=d, env=ENV, capture_output=True, text=True,
                           timeout=600)
    if again.returncode != 0:
        return f"resuming afterwards fails: {(again.stderr.strip().splitlines() or ['?'])[-1][:160]}"
    return None


def exported_at(step: int) -> Callable[[Path, Outcome], str | None]:
    def check(d: Path, outcome: Outcome) -> str | None:
        from imagegen import checkpoint

        try:
            found = checkpoint.read_info(d / "run" / "model").get("step")
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            return f"run/model does not read ({' '.join(str(e).split())[:120]})"
        return None if found == step else f"run/model is of step {found}, not {step}"

    return check


def config_says(key: str, value) -> Callable[[Path, Outcome], str | None]:
    def check(d: Path, outcome: Outcome) -> str | None:
        section, name = key.split(".")
        found = yaml.safe_load((d / "r" / "config.yaml").read_text())[section][name]
        return None if found == value else f"config.yaml has {key} {found!r}, not {value!r}"

    return check


def no_pwned(d: Path, outcome: Outcome) -> str | None:
    return "a planted pickle was executed (PWNED exists)" if (d / "PWNED").exists() else None


def is_jpeg(d: Path, outcome: Outcome) -> str | None:
    return None if (d / "x.jpg").read_bytes()[:2] == b"\xff\xd8" else "x.jpg does not hold JPEG bytes"


def files_named(*names: str) -> Callable[[Path, Outcome], str | None]:
    def check(d: Path, outcome: Outcome) -> str | None:
        missing = [n for n in names if not (d / n).is_file()]
        return f"missing {', '.join(missing)}" if missing else None

    return check


def grey_levels(name: str, count: int) -> Callable[[Path, Outcome], str | None]:
    """The first grid cell of ``name`` (the input, row 0 of a completion grid) keeps ``count`` levels."""

    def check(d: Path, outcome: Outcome) -> str | None:
        with Image.open(d / name) as im:
            cell = np.asarray(im.convert("L"))[24:24 + 96, 24:24 + 96]  # padding 2 x zoom 12
        found = len(np.unique(cell))
        return None if found >= count else f"the 16-bit input shows {found} grey levels, expected {count}"

    return check


# --- the cases -----------------------------------------------------------------------------------

CKPT = ("ckpt",)
S = ["sample", "-c", "ckpt", "-n", "2"]
C = ["complete", "-c", "ckpt", "-n", "1", "--keep-rows", "4"]
U = ["upscale", "-c", "ckpt_sr", "-n", "1"]
E = ["eval", "-c", "ckpt", "--data", "mnist.npz"]
T = ["train", "c.yaml", "--output-dir", "r"]
RUN = ("run", "tiny.yaml", "mnist.npz")
TRAIN = ("mnist.npz",)
IMG = ("ckpt", "digit.png")
K = ["complete", "-c", "ckpt", "-i", "digit.png"]
SR = ("ckpt_sr",)


def cases() -> list[Case]:
    k = Case
    out = [
        # --- the command line itself
        k("-", "unknown command", ["smaple"]),
        k("sample", "unknown option", [*S, "--nmu", "3"], CKPT),
        k("models", "an extra argument", ["models", "extra"]),
        k("sample", "--num 0", [*S, "--num", "0"], CKPT),
        k("sample", "--num -3", [*S, "--num", "-3"], CKPT),
        k("sample", "--num abc", [*S, "--num", "abc"], CKPT),
        k("sample", "--num 10^12", [*S, "--num", "1000000000000"], CKPT),
        k("sample", "--temperature nan", [*S, "-t", "nan"], CKPT),
        k("sample", "--temperature inf", [*S, "-t", "inf"], CKPT),
        k("sample", "--temperature -1", [*S, "-t", "-1"], CKPT),
        k("sample", "--temperature 1e-300", [*S, "-t", "1e-300"], CKPT),
        k("sample", "--temperature 1e400", [*S, "-t", "1e400"], CKPT),
        k("sample", "--seed -1", [*S, "--seed", "-1"], CKPT),
        k("sample", "--seed beyond 64 bits", [*S, "--seed", str(2**64)], CKPT),
        k("sample", "--seed 1.5", [*S, "--seed", "1.5"], CKPT),
        k("sample", "--label 10 of a 10-class model", ["sample", "-c", "ckpt_cond", "--label", "10"],
          ("ckpt_cond",)),
        k("sample", "--label -1", ["sample", "-c", "ckpt_cond", "--label", "-1"], ("ckpt_cond",)),
        k("sample", "--label 2^70", ["sample", "-c", "ckpt_cond", "--label", str(2**70)], ("ckpt_cond",)),
        k("sample", "--label for an unconditional model", [*S, "--label", "3"], CKPT),
        k("sample", "--decoder foo", [*S, "--decoder", "foo"], CKPT),
        k("sample", "--precision fp8", [*S, "--precision", "fp8"], CKPT),
        k("sample", "--device cuda without a GPU", [*S, "--device", "cuda"], CKPT),
        k("sample", "--device foo", [*S, "--device", "foo"], CKPT),
        k("sample", "--device meta", [*S, "--device", "meta"], CKPT),
        # --- output paths
        k("sample", "--out x.gif (unsupported format)", [*S, "--out", "x.gif"], CKPT),
        k("sample", "--out without an extension", [*S, "--out", "samples"], CKPT),
        k("sample", "--out an existing directory", [*S, "--out", "d"], CKPT,
          prepare=lambda d: (d / "d").mkdir()),
        k("sample", "--out inside a file", [*S, "--out", "f/x.png"], CKPT, prepare=write("f", "x")),
        k("sample", "--out in an unwritable place (/proc)", [*S, "--out", "/proc/x.png"], CKPT),
        k("sample", "--out x.jpg writes JPEG", [*S, "--out", "x.jpg"], CKPT, expect="ok", check=is_jpeg),
        k("sample", "failing run beside an existing --out", ["sample", "-c", "ckpt_nan", "--out", "out.png"],
          ("ckpt_nan",), prepare=old_output()),
        k("complete", "--out-dir is a file", [*C, "-i", "digit.png", "--out-dir", "f"], IMG,
          prepare=write("f", "x")),
        k("complete", "--out-dir inside a file", [*C, "-i", "digit.png", "--out-dir", "f/d"], IMG,
          prepare=write("f", "x")),
        k("complete", "--out-dir in /proc", [*C, "-i", "digit.png", "--out-dir", "/proc/d"], IMG),
        k("complete", "--out is one of the --out-dir files", [*C, "-i", "digit.png", "--out-dir", "o",
                                                               "--out", "o/digit_0.png"], IMG),
        k("complete", "two inputs with the same file name, --out-dir", [*C, "-i", "digit.png", "-i",
                                                                         "a/digit.png", "--out-dir", "o"],
          IMG, prepare=lambda d: (d / "a").mkdir() or shutil.copy(d / "digit.png", d / "a"), expect="ok",
          check=files_named("o/digit_0.png", "o/digit-2_0.png")),
        k("train", "--output-dir inside a file", [*T[:2], "--output-dir", "f/r"], TRAIN,
          prepare=both(BASE, write("f", "x"))),
        k("train", "--output-dir in /proc", [*T[:2], "--output-dir", "/proc/r"], TRAIN,
          prepare=BASE),
        # --- checkpoints
        k("sample", "--checkpoint that does not exist", ["sample", "-c", "nowhere"]),
        k("sample", "--checkpoint is a file", ["sample", "-c", "digit.png"], ("digit.png",)),
        k("sample", "checkpoint without model.safetensors", S, CKPT,
          prepare=lambda d: (d / "ckpt" / "model.safetensors").unlink()),
        k("sample", "config.json is not JSON", S, CKPT, prepare=write("ckpt/config.json", "{nope")),
        k("sample", "config.json is a JSON list", S, CKPT, prepare=write("ckpt/config.json", "[1, 2]")),
        k("sample", "config.json is binary", S, CKPT, prepare=write("ckpt/config.json", b"\xff\xfe\x00")),
        k("sample", "config.json names an unknown model", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(name="pixelgan"))),
        k("sample", "config.json: even kernel_size", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(kernel_size=4))),
        k("sample", "config.json: channels 0", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(channels=0))),
        k("sample", "config.json: an unknown hparam", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(dropuot=0.1))),
        k("sample", "config/weights shape mismatch", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(hidden=8))),
        k("sample", "weights missing tensors", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(num_layers=3))),
        k("sample", "model.safetensors empty", S, CKPT, prepare=write("ckpt/model.safetensors", b"")),
        k("sample", "model.safetensors random bytes", S, CKPT,
          prepare=write("ckpt/model.safetensors", np.random.default_rng(2).bytes(5000))),
        k("sample", "model.safetensors is a pickle", S, CKPT,
          prepare=write("ckpt/model.safetensors", pickle.dumps(Evil())), check=no_pwned),
        k("sample", "NaN weights", ["sample", "-c", "ckpt_nan"], ("ckpt_nan",)),
        k("sample", "infinite weights", ["sample", "-c", "ckpt_inf"], ("ckpt_inf",)),
        k("sample", "finite weights, logits overflow to inf", ["sample", "-c", "ckpt_overflow", "-n", "2"],
          ("ckpt_overflow",)),
        k("eval", "NaN weights", ["eval", "-c", "ckpt_nan", "--data", "mnist.npz"],
          ("ckpt_nan", "mnist.npz")),
        k("eval", "logits overflow to inf", ["eval", "-c", "ckpt_overflow", "--data", "mnist.npz"],
          ("ckpt_overflow", "mnist.npz")),
        k("sample", "a super-resolution checkpoint", ["sample", "-c", "ckpt_sr"], ("ckpt_sr",)),
        k("upscale", "a checkpoint that is not super-resolution",
          ["upscale", "-c", "ckpt", "-i", "small.png"], ("ckpt", "small.png")),
        k("complete", "a super-resolution checkpoint", ["complete", "-c", "ckpt_sr", "-i", "digit.png",
                                                        "--keep-rows", "4"], ("ckpt_sr", "digit.png")),
        # --- eval data
        k("eval", "--data that does not exist", ["eval", "-c", "ckpt", "--data", "nowhere.npz"], CKPT),
        k("eval", "--data an empty file", E, CKPT, prepare=write("mnist.npz", b"")),
        k("eval", "--data random bytes", E, CKPT,
          prepare=write("mnist.npz", np.random.default_rng(3).bytes(999))),
        k("eval", "--data lacks arrays", E, CKPT, prepare=lambda d: np.savez(d / "mnist.npz", x=np.zeros(3))),
        k("eval", "--data of the wrong shape", E, CKPT,
          prepare=lambda d: np.savez(d / "mnist.npz", x_train=np.zeros((4, 3, 3, 3), np.uint8),
                                     y_train=np.zeros(4, np.uint8), x_test=np.zeros((4, 3, 3, 3), np.uint8),
                                     y_test=np.zeros(4, np.uint8))),
        k("eval", "--data of float pixels", E, CKPT,
          prepare=lambda d: np.savez(d / "mnist.npz", x_train=np.full((16, 8, 8), 0.5),
                                     y_train=np.zeros(16, np.uint8), x_test=np.full((4, 8, 8), 0.5),
                                     y_test=np.zeros(4, np.uint8))),
        k("eval", "an empty split (val_size 0)", ["eval", "-c", "ckpt_noval", "--data", "mnist.npz"],
          ("ckpt_noval", "mnist.npz")),
        k("eval", "--dataset of another shape", [*E, "--dataset", "cifar10"], (*CKPT, "mnist.npz")),
        k("eval", "--dataset unknown", [*E, "--dataset", "mnits"], (*CKPT, "mnist.npz")),
        k("eval", "--limit 0", [*E, "--limit", "0"], (*CKPT, "mnist.npz")),
        k("eval", "--batch-size 0", [*E, "--batch-size", "0"], (*CKPT, "mnist.npz")),
        k("eval", "--sr-samples -1", [*E, "--sr-samples", "-1"], (*CKPT, "mnist.npz")),
        k("eval", "--split dev", [*E, "--split", "dev"], (*CKPT, "mnist.npz")),
        k("eval", "labels beyond the model's classes", ["eval", "-c", "ckpt_cond5", "--data", "mnist.npz"],
          ("ckpt_cond5", "mnist.npz")),
        k("eval", "checkpoint without a dataset, no --dataset",
          ["eval", "-c", "ckpt_nodataset", "--data", "mnist.npz"], ("ckpt_nodataset", "mnist.npz")),
        k("eval", "a folder with a damaged image", ["eval", "-c", "ckpt", "--data", "folder", "--dataset",
                                                    "folder"], ("ckpt", "folder")),
        k("eval", "--data a FIFO", ["eval", "-c", "ckpt", "--data", "fifo.npz"], CKPT,
          prepare=mkfifo("fifo.npz")),
        # --- images and masks
        k("complete", "--image that does not exist", [*C, "-i", "nowhere.png"], CKPT),
        k("complete", "--image empty", [*C, "-i", "empty.png"], (*CKPT, "empty.png")),
        k("complete", "--image random bytes", [*C, "-i", "noise.png"], (*CKPT, "noise.png")),
        k("complete", "--image truncated PNG", [*C, "-i", "truncated.png"], (*CKPT, "truncated.png")),
        k("complete", "--image PNG with a bad CRC", [*C, "-i", "badcrc.png"], (*CKPT, "badcrc.png")),
        k("complete", "--image a directory", [*C, "-i", "d"], CKPT, prepare=lambda d: (d / "d").mkdir()),
        k("complete", "--image a FIFO (would block)", [*C, "-i", "fifo.png"], CKPT,
          prepare=mkfifo("fifo.png")),
        k("complete", "--image /dev/zero", [*C, "-i", "/dev/zero"], CKPT),
        k("complete", "--image of another size", [*C, "-i", "big.png"], (*CKPT, "big.png")),
        k("complete", "--image a decompression bomb (60000x60000 header)", [*C, "-i", "bomb.png"],
          (*CKPT, "bomb.png")),
        k("complete", "one good and one damaged --image",
          [*C, "-i", "digit.png", "-i", "noise.png", "--out", "out.png"], (*IMG, "noise.png"),
          prepare=old_output()),
        k("complete", "--image a 16-bit PNG", [*C, "-i", "g16.png", "--out", "g.png"], (*CKPT, "g16.png"),
          expect="ok", check=grey_levels("g.png", 64)),
        k("complete", "--keep-rows 99", [*K, "--keep-rows", "99"], IMG),
        k("complete", "--keep-rows -1", [*K, "--keep-rows", "-1"], IMG),
        k("complete", "--keep-fraction nan", [*K, "--keep-fraction", "nan"], IMG),
        k("complete", "--keep-fraction 1.5", [*K, "--keep-fraction", "1.5"], IMG),
        k("complete", "nothing to keep given", K, IMG),
        k("complete", "two keep options", [*C, "-i", "digit.png", "--keep-fraction", "0.5"], IMG),
        k("complete", "--mask of another size", [*K, "--mask", "big.png"], (*IMG, "big.png")),
        k("complete", "--mask damaged", [*K, "--mask", "noise.png"], (*IMG, "noise.png")),
        k("complete", "--num 10001", [*C, "-i", "digit.png", "--num", "10001"], IMG),
        k("complete", "--label for an unconditional model", [*C, "-i", "digit.png", "--label", "1"], IMG),
        k("upscale", "--image of the high-resolution size", [*U, "-i", "digit.png"], (*SR, "digit.png")),
        k("upscale", "--image damaged", [*U, "-i", "truncated.png"], (*SR, "truncated.png")),
        k("upscale", "--temperature nan", [*U, "-i", "small.png", "-t", "nan"], (*SR, "small.png")),
        k("upscale", "--out-dir is a file", [*U, "-i", "small.png", "--out-dir", "f"], (*SR, "small.png"),
          prepare=write("f", "x")),
        # --- configs
        k("train", "config that does not exist", ["train", "nowhere.yaml"]),
        k("train", "config is a directory", ["train", "d"], prepare=lambda d: (d / "d").mkdir()),
        k("train", "config is binary", T, TRAIN, prepare=write("c.yaml", b"\xff\xfe\x00\x81")),
        k("train", "config is not YAML", T, TRAIN, prepare=config(text="model: [name: x\n")),
        k("train", "config is a YAML list", T, TRAIN, prepare=config(text="- 1\n- 2\n")),
        k("train", "config is a FIFO", T, TRAIN, prepare=mkfifo("c.yaml")),
        k("train", "unknown section", T, TRAIN, prepare=config(lambda c: c.update(optim={"lr": 1}))),
        k("train", "model section without a name", T, TRAIN,
          prepare=config(lambda c: c["model"].pop("name"))),
        k("train", "model section is a list", T, TRAIN, prepare=config(lambda c: c.update(model=[1]))),
        k("train", "train section is a number", T, TRAIN, prepare=config(lambda c: c.update(train=5))),
        bad_value("train", "lerning_rate", 1, "unknown key"),
        bad_value("model", "name", "pixelgan"),
        bad_value("model", "channels", 0),
        k("train", "model.channels: 3 on 1-channel data", T, TRAIN,
          prepare=config(lambda c: c["model"].update(channels=3, hidden=6))),
        bad_value("model", "kernel_size", 4, "(even)"),
        bad_value("model", "hidden", 0),
        bad_value("model", "hidden", "eight"),
        bad_value("model", "levels", 1000),
        bad_value("train", "batch_size", "eight"),
        bad_value("train", "batch_size", 999, "(more than the data)"),
        bad_value("train", "lr", -0.003),
        bad_value("train", "lr", float("nan")),
        bad_value("train", "max_steps", -5),
        bad_value("train", "eval_every", 0),
        bad_value("train", "checkpoint_every", 0),
        bad_value("train", "betas", [0.9]),
        bad_value("train", "mixed_precision", "fp8"),
        bad_value("data", "binarize", True),
        k("train", "--set train.batch_size=3.5", [*T, "--set", "train.batch_size=3.5"], TRAIN,
          prepare=BASE),
        k("train", "--set train.seed=2^70", [*T, "--set", f"train.seed={2**70}"], TRAIN,
          prepare=BASE),
        k("train", "--set without a section", [*T, "--set", "lr=1"], TRAIN, prepare=BASE),
        k("train", "--max-steps 0", [*T, "--max-steps", "0"], TRAIN, prepare=BASE),
        k("train", "data.path that does not exist", T, prepare=BASE),
        k("train", "data file damaged", T, prepare=both(BASE, write("mnist.npz", b"PK\x03"))),
        k("train", "an existing run without --resume", ["train", "c.yaml", "--output-dir", "run"], RUN,
          prepare=lambda d: shutil.copy(d / "tiny.yaml", d / "c.yaml")),
        k("train", "--resume at a step already past --max-steps", ["train", "c.yaml", "--output-dir", "run",
                                                                   "--resume", "--max-steps", "1"], RUN,
          prepare=lambda d: shutil.copy(d / "tiny.yaml", d / "c.yaml"), rundir=True),
    ]
    out += hostile()
    out += faults()
    return out


def hostile() -> list[Case]:
    """Crafted files and careless inputs found after the first battery: sizes that would allocate
    terabytes, nesting and aliases that would recurse or expand, links out of a run, outputs over
    inputs, names at the file system's limit, resumes with other data."""
    k = Case
    copy_config = lambda d: shutil.copy(d / "tiny.yaml", d / "c.yaml")  # noqa: E731
    resume = ["train", "c.yaml", "--output-dir", "run", "--resume", "--max-steps", "4"]
    cpu = lambda s: s.rng.update(cpu=s.rng["cpu"][:, :100])  # noqa: E731
    betas = lambda s: s.optimizer["param_groups"][0].update(betas=["x", 2])  # noqa: E731
    long_stem = "y" * 250
    return [
        # --- configs
        k("train", "config: a YAML alias bomb (9 levels, 387M strings) in train.lr", T, TRAIN,
          prepare=config(text=alias_bomb())),
        k("train", "config: nested 50,000 deep", T, TRAIN, prepare=config(text="model: " + "[" * 50_000)),
        k("train", "model.levels: 2 on 256-level data", T, TRAIN,
          prepare=config(setting("model", "levels", 2))),
        k("train", "model.num_classes: 3 on 10-class data", T, TRAIN,
          prepare=config(lambda c: c.update(model={**c["model"], "num_classes": 3},
                                            data={**c["data"], "class_conditional": True}))),
        bad_value("train", "num_samples", 10**9, "(sampled after training began)"),
        k("train", "--data a folder YAML reads as a number (2024/)",
          ["train", "c.yaml", "--output-dir", "r", "--data", "2024"], TRAIN,
          prepare=both(BASE, lambda d: (d / "2024").mkdir() or shutil.copy(d / "mnist.npz", d / "2024")),
          expect="ok", check=config_says("data.path", "2024"), may_change=("r", "r/**")),
        # --- checkpoints
        k("sample", "config.json: hidden 10^6 (terabytes of weights)", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(hidden=10**6))),
        k("sample", "config.json: num_layers 10^7", S, CKPT,
          prepare=edit_json("ckpt/config.json", lambda i: i["model"].update(num_layers=10**7))),
        k("sample", "config.json nested 100,000 deep", S, CKPT,
          prepare=write("ckpt/config.json", "[" * 100_000)),
        k("eval", "config.json: val_size of the wrong type", E, (*CKPT, "mnist.npz"),
          prepare=edit_json("ckpt/config.json", lambda i: i.update(val_size="all"))),
        k("sample", "weights stored as int32", S, CKPT, prepare=weights_as("int32")),
        k("sample", "weights stored as complex64", S, CKPT, prepare=weights_as("complex64")),
        k("sample", "safetensors header length 2^62", S, CKPT, prepare=safetensors_header(b"{}", 2**62)),
        k("sample", "safetensors header claiming 2^40 values", S, CKPT, prepare=safetensors_header(json.dumps(
            {"head.bias": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}).encode())),
        k("sample", "--checkpoint a run directory", ["sample", "-c", "run"], ("run",)),
        k("sample", "--checkpoint a training checkpoint", ["sample", "-c", "run/checkpoints/step_00000002"],
          ("run",)),
        # --- outputs
        k("complete", "--out is the --image", [*C, "-i", "digit.png", "--out", "digit.png"], IMG),
        k("complete", "--out-dir would overwrite an input", [*C, "-i", "digit.png", "-i", "digit_0.png",
                                                             "--out-dir", "."], IMG,
          prepare=lambda d: shutil.copy(d / "digit.png", d / "digit_0.png")),
        k("complete", "--mask is --out", [*K, "--mask", "mask.png", "--out", "mask.png"], (*IMG, "mask.png")),
        k("sample", "--out of 255 bytes (the longest name)", [*S, "--out", "x" * 251 + ".png"], CKPT,
          expect="ok", check=files_named("x" * 251 + ".png")),
        k("sample", "--out of 256 bytes", [*S, "--out", "x" * 252 + ".png"], CKPT),
        k("complete", "--out-dir sample names of 256 bytes", [*C, "-i", f"{long_stem}.png", "--out-dir", "o"],
          IMG, prepare=lambda d: shutil.copy(d / "digit.png", d / f"{long_stem}.png")),
        k("complete", "--animate over the --image", [*C, "-i", "digit.png", "--animate", "digit.png"], IMG),
        k("sample", "--animate x.jpg (not an animation format)", [*S, "--animate", "x.jpg"], CKPT),
        k("sample", "--animate of 256 bytes", [*S, "--animate", "x" * 252 + ".gif"], CKPT),
        k("explain", "explain nll --out over its --image",
          ["explain", "nll", "-c", "ckpt", "-i", "digit.png", "--out", "digit.png"], IMG),
        k("explain", "explain nll of a damaged image", ["explain", "nll", "-c", "ckpt", "-i", "noise.png"],
          (*CKPT, "noise.png")),
        k("explain", "explain attention of a PixelCNN",
          ["explain", "attention", "-c", "ckpt", "-i", "digit.png", "-p", "1,1"], IMG),
        k("explain", "explain receptive-field --pixel beyond the image",
          ["explain", "receptive-field", "-c", "ckpt", "-p", "99,1"], CKPT),
        # --- run directories
        k("train", "run.lock is a link to a file outside the run", resume, RUN,
          prepare=both(copy_config, link("run/run.lock", "victim.txt")), rundir=True),
        k("train", "metrics.jsonl is a link to a file outside the run", resume, RUN,
          prepare=both(copy_config, link("run/metrics.jsonl", "victim.jsonl")), rundir=True),
        k("train", "metrics.jsonl is a FIFO", resume, RUN,
          prepare=both(copy_config, lambda d: (d / "run" / "metrics.jsonl").unlink(),
                       mkfifo("run/metrics.jsonl")), rundir=True),
        k("train", "--resume with data of another shape (12x12)", [*resume, "--data", "wide.npz"], RUN,
          prepare=both(copy_config, lambda d: tiny_mnist(d / "wide.npz", size=12)), rundir=True),
        k("train", "--resume with other images of the same shape", [*resume, "--data", "other.npz"], RUN,
          prepare=both(copy_config, lambda d: tiny_mnist(d / "other.npz", n_train=80)), rundir=True),
        k("train", "--resume of a run whose final export was cut short",
          ["train", "c.yaml", "--output-dir", "run", "--resume"], RUN,
          prepare=both(copy_config, lambda d: shutil.rmtree(d / "run" / "model")), expect="ok",
          check=exported_at(2), may_change=("run", "run/**"), rundir=True),
        k("train", "--resume of a checkpoint with a crafted generator state (valid manifest)", resume, RUN,
          prepare=both(copy_config, rewrite_state(cpu)), rundir=True),
        k("train", "--resume of a checkpoint with crafted optimizer betas (valid manifest)", resume, RUN,
          prepare=both(copy_config, rewrite_state(betas)), rundir=True),
        k("complete", "two writers into one --out-dir", [*C, "-i", "digit.png", "-n", "4", "--out-dir", "o"],
          IMG, expect="ok", runner=two_at_once, may_change=("o", "o/*", "completions.png")),
    ]


def bad_value(section: str, key: str, value, note: str = "") -> Case:
    """A train case whose config holds ``section.key: value``."""
    return Case("train", f"{section}.{key}: {json.dumps(value)} {note}".strip(), T, TRAIN,
                prepare=config(setting(section, key, value)))


def faults() -> list[Case]:
    k = Case
    copy_config = lambda d: shutil.copy(d / "tiny.yaml", d / "c.yaml")  # noqa: E731
    return [
        k("sample", "disk full while writing --out (RLIMIT_FSIZE 2 kB)", [*S, "-n", "16", "--out", "out.png"],
          CKPT, prepare=old_output(), expect="fault", fsize=2000),
        k("complete", "disk full while writing --out-dir and --out", [*C, "-i", "digit.png", "-n", "4",
                                                                      "--out-dir", "o", "--out", "out.png"],
          IMG, prepare=old_output(), expect="fault", fsize=400, may_change=("o", "o/*")),
        k("train", "disk full while saving a checkpoint (RLIMIT_FSIZE 20 kB)", T, TRAIN,
          prepare=BASE, expect="fault", fsize=20_000, may_change=("r", "r/*", "r/**")),
        k("sample", "kill -9 while writing --out over an existing file",
          ["sample", "-c", "ckpt", "-n", "3000", "--out", "out.png"], CKPT, prepare=old_output(),
          expect="fault", runner=kill_while_writing),
        k("sample", "Ctrl-C (SIGINT) while sampling", ["sample", "-c", "ckpt", "-n", "3000", "--decoder",
                                                       "reference", "--out", "out.png"],
          CKPT, prepare=old_output(), expect="fault", runner=interrupt_while_busy,
          check=lambda d, o: None if o.rc == 130 else f"exit {o.rc}, not 130"),
        k("sample", "two samplers writing the same --out", [*S, "--out", "out.png"], CKPT, expect="ok",
          runner=two_at_once, may_change=("out.png",)),
        k("train", "kill -9 while saving a checkpoint (resume after)",
          ["train", "c.yaml", "--output-dir", "run", "--resume", "--max-steps", "4"],
          ("bigrun", "big.yaml", "mnist.npz"),
          prepare=big_run,
          expect="fault", runner=kill_while_writing, check=run_is_sound, may_change=("run", "run/**"),
          rundir=True),
        k("sample", "SIGTERM while sampling", ["sample", "-c", "ckpt", "-n", "3000", "--decoder", "reference",
                                                "--out", "out.png"],
          CKPT, prepare=old_output(), expect="fault", runner=signal_while_busy(signal.SIGTERM),
          check=all_of(exit_code(143), no_temporaries)),
        k("sample", "SIGTERM while writing --out", ["sample", "-c", "ckpt", "-n", "3000", "--out", "out.png"],
          CKPT, prepare=old_output(), expect="fault", runner=signal_while_writing(signal.SIGTERM),
          check=all_of(exit_code(143), no_temporaries)),
        *(k("train", f"{what} while saving a checkpoint (resume after)",
            ["train", "c.yaml", "--output-dir", "run", "--resume", "--max-steps", "4"],
            ("bigrun", "big.yaml", "mnist.npz"), prepare=big_run, expect="fault",
            runner=signal_while_writing(sig), check=all_of(exit_code(code), no_temporaries, run_is_sound),
            may_change=("run", "run/**"), rundir=True)
          for what, sig, code in (("SIGTERM", signal.SIGTERM, 143), ("Ctrl-C", signal.SIGINT, 130))),
        k("train", "disk full while writing a sample grid", T, TRAIN,
          prepare=config(lambda c: c["train"].update(sample_every=1)), expect="fault", fsize=3000,
          check=exit_code(1), may_change=("r", "r/*", "r/**")),
        k("train", "two trainers on one run directory", ["train", "c.yaml", "--output-dir", "run"],
          ("tiny.yaml", "mnist.npz"), prepare=copy_config, expect="any", runner=two_at_once,
          check=one_refused, may_change=("run", "run/**"), rundir=True),
        k("train", "pickles planted in the run's checkpoint, then --resume",
          ["train", "c.yaml", "--output-dir", "run", "--resume", "--max-steps", "4"], RUN,
          prepare=both(copy_config, plant_pickles), expect="any", check=no_pwned,
          may_change=("run", "run/**"), rundir=True),
    ]


# --- running and judging -------------------------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


def snapshot(d: Path) -> dict[str, tuple]:
    """Every entry under ``d``: relative path -> (kind, size, sha256, mode)."""
    snap = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        st = p.lstat()
        if p.is_fifo():
            snap[rel] = ("fifo", 0, "", st.st_mode)
        elif p.is_file():
            snap[rel] = ("file", st.st_size, hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
        else:
            snap[rel] = ("dir", 0, "", st.st_mode)
    return snap


def readable(path: Path) -> bool:
    """Whether a file at its final name reads back whole (images, JSON, YAML, safetensors)."""
    try:
        suffix = path.suffix.lower()
        if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
            with Image.open(path) as im:
                im.load()
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        elif suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            load_file(path)
    except Exception:  # noqa: BLE001 - any failure to read back is the finding
        return False
    return True


def run_case(n: int, case: Case, assets: Path, work: Path) -> Result:
    d = work / f"case_{n:03d}"
    d.mkdir()
    home = work / f"home_{n:03d}"  # datasets are looked for in the data root: keep the real one out of reach
    home.mkdir()
    for name in case.assets:
        src = assets / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, d / name)
    if case.prepare:
        case.prepare(d)
    before = snapshot(d)
    cmd = [sys.executable, "-m", "imagegen.cli", *case.args]
    env = {**ENV, "HOME": str(home), "IMAGEGEN_DATA": str(home / "data")}
    start = time.perf_counter()
    if case.runner:
        outcome = case.runner(case, d, cmd, env)
    else:
        try:
            proc = popen(cmd, d, env, case.fsize)
            stdout, stderr = proc.communicate(timeout=case.timeout)
            outcome = Outcome(proc.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            outcome = Outcome(-9, stdout, stderr, f"timed out after {case.timeout:.0f} s")
    seconds = time.perf_counter() - start
    after = snapshot(d)
    result = Result(case, outcome, "", seconds=seconds)
    judge(result, d, before, after)
    return result


def judge(result: Result, d: Path, before: dict, after: dict) -> None:
    case, out, problems = result.case, result.outcome, result.problems
    if "Traceback (most recent call last)" in out.stdout + out.stderr:
        problems.append("traceback")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    if case.expect == "bad":
        if out.rc != 2:
            problems.append(f"exit {out.rc}, not 2")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"{len(lines)} stderr lines, not one `error:` line")
    elif case.expect == "fault" and out.rc == 0:
        problems.append("exit 0 after a fault")
    elif case.expect == "ok" and out.rc != 0:
        problems.append(f"exit {out.rc}, not 0")
    if out.note.startswith(("not exercised", "timed out")):
        problems.append(out.note)

    def allowed(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, pattern) for pattern in case.may_change)

    added = [r for r in after if r not in before]
    changed = [r for r in after if r in before and after[r] != before[r] and before[r][0] != "dir"]
    removed = [r for r in before if r not in after]
    damaged = [r for r in changed + removed if not allowed(r)]
    if damaged:
        problems.append(f"changed or removed existing files: {', '.join(damaged[:3])}")
    if case.expect == "bad" and added:
        problems.append("wrote files on bad input")
    unreadable = [r for r in added + changed if after[r][0] == "file" and not Path(r).name.startswith(".")
                  and not readable(d / r)]
    if unreadable:
        problems.append(f"unreadable files at their final names: {', '.join(unreadable[:3])}")
    if case.check:
        problem = case.check(d, out)
        if problem:
            problems.append(problem)
    result.files = describe_changes(added, changed, removed)


TEMP_NAME = re.compile(r"\.?tmp[A-Za-z0-9_]{6,}|\.[a-z0-9_]{8}\.tmp")  # random parts of temporary names


def describe_changes(added: list[str], changed: list[str], removed: list[str]) -> str:
    """``wrote `o/` (3 files); changed `out.png``` and so on, by top-level entry."""

    def some(names: list[str]) -> str:
        tops: dict[str, int] = {}
        for name in names:
            top = TEMP_NAME.sub(".tmp", name.split("/")[0] + ("/" if "/" in name else ""))
            tops[top] = tops.get(top, 0) + 1
        shown = [f"`{t}`" + (f" ({n} entries)" if n > 1 else "") for t, n in list(tops.items())[:3]]
        return ", ".join(shown) + (f" (+{len(tops) - 3} more)" if len(tops) > 3 else "")

    parts = [f"{label} {some(names)}" for label, names in (("wrote", added), ("changed", changed),
                                                            ("removed", removed)) if names]
    return "; ".join(parts) or "nothing"


def message(result: Result, d: Path) -> str:
    """The line the user saw: the ``error:`` line, else the first line of stderr or stdout."""
    out = result.outcome
    lines = [line for line in (out.stderr + "\n" + out.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    killed = [f"(killed by signal {-out.rc})"] if out.rc < 0 else []
    shown = (errors or killed or lines or ["(no output)"])[0]
    shown = TEMP_NAME.sub(".tmp", shown.replace(str(d) + "/", "").replace(str(d), "."))
    return " ".join(shown.split())[:240]


# --- the report ----------------------------------------------------------------------------------


def report(results: list[Result], work: Path, seconds: float, jobs: int, load: tuple[float, ...]) -> str:
    failed = [r for r in results if r.problems]
    rows = []
    for n, r in enumerate(results, 1):
        verdict = "pass" if not r.problems else "**FAIL**: " + "; ".join(r.problems)
        note = f" ({r.outcome.note})" if r.outcome.note else ""
        what = r.case.what + (" [rundir]" if r.case.rundir else "") + note
        msg = message(r, work / f"case_{n:03d}")
        rows.append([str(n), f"`{r.case.command}`", cell(what), str(r.outcome.rc), cell(f"`{msg}`"),
                     cell(r.files), cell(verdict)])
    machine = f"{os.cpu_count()}-core {cpu_name()}"
    lines = [
        "# What happens on bad input",
        "",
        "Generated by `python scripts/check_bad_inputs.py` (do not edit by hand): every row ran the real",
        "`imagegen` command (`python -m imagegen.cli`) as a subprocess in a fresh temporary directory,",
        "with small checkpoints, data and images the script makes. *exit* is the exit code (2 bad input,",
        "1 other failure, 130 interrupted, -9 killed), *message* the line the user saw, *files* what the",
        "command wrote, changed or removed in its directory (compared by content before and after).",
        "A case fails on a traceback, on bad input that does not exit 2 with one `error:` line or",
        "that writes anything, on a fault that exits 0, on a changed or removed existing file, or on a",
        "file left unreadable at its final name. Cases marked [rundir] check guarantees of the",
        "run-directory work (a lock against two writers, no pickles, saves that survive kill -9).",
        "",
        f"**{len(results) - len(failed)} of {len(results)} cases pass**; {len(results)} cases in "
        f"{seconds:.0f} s on a {machine} (Python {platform.python_version()}, {jobs} at once; load average "
        f"{load[0]:.1f} at the start: the machine is shared).",
        "",
        markdown_table(["#", "command", "bad input or fault", "exit", "message", "files", "result"], rows),
        "",
    ]
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md", help="report (markdown)")
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default: %(default)s)")
    p.add_argument("--only", help="run only the cases whose description contains one of these texts "
                   "(comma-separated), print the table and each case's stderr, and write no report")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = p.parse_args(argv)
    start, load = time.perf_counter(), os.getloadavg()
    wanted = args.only.split(",") if args.only else []
    selected = [c for c in cases() if not wanted or any(w in c.what for w in wanted)]
    work = Path(tempfile.mkdtemp(prefix="imagegen-bad-inputs-"))
    try:
        assets = work / "assets"
        assets.mkdir()
        print(f"making assets in {assets} ...", file=sys.stderr)
        runs = {name for c in selected for name in c.assets if name in ("run", "bigrun")}
        make_assets(assets, {**ENV, "HOME": str(work), "IMAGEGEN_DATA": str(work / "data")}, runs)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_case, n, c, assets, work) for n, c in enumerate(selected, 1)]
            results = []
            for n, f in enumerate(futures, 1):
                r = f.result()
                results.append(r)
                status = "pass" if not r.problems else "FAIL " + "; ".join(r.problems)
                print(f"{n:3d}/{len(selected)} {r.seconds:5.1f}s rc={r.outcome.rc:<4} {r.case.command:8s} "
                      f"{r.case.what}: {status}", file=sys.stderr)
        text = report(results, work, time.perf_counter() - start, args.jobs, load)
        if args.only:
            print(text)
            for r in results:
                print(f"--- {r.case.what}: exit {r.outcome.rc}\n{r.outcome.stderr.strip()[-3000:]}")
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            print(f"wrote {args.out}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = sum(bool(r.problems) for r in results)
    print(f"{len(results) - failed} of {len(results)} cases pass", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
