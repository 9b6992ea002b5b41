"""``imagegen serve`` over HTTP, without a browser: each tab's request gives the pixels of the CLI
command it names, bad requests get one readable line (never a traceback), Stop and a closed page end
the sampler, and nothing is written outside a temporary directory. Tiny random checkpoints."""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("starlette", reason='the web extra is not installed: pip install -e ".[test,web]"')
pytest.importorskip("uvicorn", reason='the web extra is not installed: pip install -e ".[test,web]"')

from imagegen import checkpoint  # noqa: E402
from imagegen.cli import main  # noqa: E402
from imagegen.explain.nll import nll_map  # noqa: E402
from imagegen.imageio import make_grid, read_image  # noqa: E402
from imagegen.models import build_model  # noqa: E402
from imagegen.sampling import sample  # noqa: E402
from imagegen.serve.app import create_app  # noqa: E402
from imagegen.serve.limits import Limits  # noqa: E402

from .serve_helpers import call, events, fetch, finish, running  # noqa: E402

LIMITS = Limits(max_images=16, max_upload_bytes=64 * 1024, max_pixels=100 * 100, queue_length=4)


def pixels(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)))


def read(path) -> np.ndarray:
    return pixels(path.read_bytes())


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


def png_file(path, size, value=0) -> str:
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server of four tiny checkpoints (8x8 grey; ``slow``: 96x96, for Stop) on a free port."""
    root = tmp_path_factory.mktemp("serve_checkpoints")
    torch.manual_seed(0)
    small = dict(channels=1, image_size=8, hidden=4, num_layers=2)
    paths = {
        "px": checkpoint.save(build_model("gated_pixelcnn", **small), root / "px"),
        "sr": checkpoint.save(build_model("gated_pixelcnn_sr", **small, upscale_factor=2, cond_features=4,
                                          cond_layers=1), root / "sr"),
        "tf": checkpoint.save(build_model("transformer_1d", channels=1, image_size=8, hidden=16, num_layers=2,
                                          num_heads=2, ffn_hidden=24, block_length=8, memory_length=8),
                              root / "tf"),
        "slow": checkpoint.save(build_model("gated_pixelcnn", **{**small, "image_size": 96}), root / "slow"),
    }
    keys = {name: str(path) for name, path in paths.items()}
    app = create_app(list(keys.values()), limits=LIMITS)
    digit = png_file(root / "digit.png", (8, 8), 200)
    with running(app) as base:
        yield base, keys, digit, app


def cli(*args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def test_sample_gives_the_pixels_of_imagegen_sample_and_streams_the_canvas(served, tmp_path):
    base, keys, _, _ = served
    status, job = call(f"{base}/api/jobs", {"kind": "sample", "checkpoint": keys["px"], "num": 3, "seed": 5},
                       client="sample")
    assert status == 202 and job["state"] == "queued"
    seen = list(events(f"{base}/api/jobs/{job['id']}/events"))
    last = seen[-1]
    assert last["state"] == "done" and "--seed 5" in last["command"]
    assert last["pictures"] == ["grid", "0", "1", "2"]
    cli("sample", "--checkpoint", keys["px"], "--num", 3, "--seed", 5, "--out", tmp_path / "cli.png")
    assert np.array_equal(pixels(fetch(base + last["urls"]["grid"])), read(tmp_path / "cli.png"))
    images = sample(checkpoint.load(keys["px"]), 3, seed=5)
    for k in range(3):
        assert np.array_equal(pixels(fetch(base + last["urls"][str(k)])), images[k, 0].numpy())
    frames = [pixels(base64.b64decode(e["frame"].split(",")[1])) for e in seen if e.get("frame")]
    assert len(frames) >= 2  # a frame per image row (8 rows); the stream skips some when it lags
    grey = [(f == 128).sum() for f in frames]
    assert grey[0] >= 3 * 8 and grey == sorted(grey, reverse=True)  # rows not written yet are grey
    assert np.array_equal(frames[-1], make_grid(images)[0].numpy())  # the last frame: the images


def test_complete_keeps_rows_like_imagegen_complete(served, tmp_path):
    base, keys, digit, _ = served
    body = {"kind": "complete", "checkpoint": keys["px"], "num": 2, "seed": 4, "image": b64(digit),
            "filename": "digit.png"}
    last = finish(base, call(f"{base}/api/jobs", {**body, "keep_rows": 3}, client="complete")[1])
    assert last["state"] == "done", last
    cli("complete", "--checkpoint", keys["px"], "--image", digit, "--keep-rows", 3, "--num", 2, "--seed", 4,
        "--out", tmp_path / "cli.png")
    grid = pixels(fetch(base + last["urls"]["grid"]))
    assert np.array_equal(grid, read(tmp_path / "cli.png"))
    for k in range(2):
        completion = pixels(fetch(base + last["urls"][str(k)]))
        assert (completion[:3] == 200).all()  # the kept rows are the digit's
    assert "mask" not in last["pictures"]
    drawn = "1" * 24 + "0" * 40  # the same three rows, drawn as a mask: the same completions
    again = finish(base, call(f"{base}/api/jobs", {**body, "mask": drawn}, client="complete")[1])
    assert np.array_equal(pixels(fetch(base + again["urls"]["grid"])), grid)
    drawn = "1" * 24 + "0" * 20 + "1" * 20  # with the 2 bottom rows and half of row 5: as `--mask` that file
    again = finish(base, call(f"{base}/api/jobs", {**body, "mask": drawn}, client="complete")[1])
    (tmp_path / "mask.png").write_bytes(fetch(base + again["urls"]["mask"]))
    assert "--mask imagegen-complete-mask.png" in again["command"]
    cli("complete", "--checkpoint", keys["px"], "--image", digit, "--mask", tmp_path / "mask.png", "--num", 2,
        "--seed", 4, "--out", tmp_path / "cli.png")
    assert np.array_equal(pixels(fetch(base + again["urls"]["grid"])), read(tmp_path / "cli.png"))


def test_upscale_is_imagegen_upscale(served, tmp_path):
    base, keys, _, _ = served
    small = png_file(tmp_path / "small.png", (4, 4), 90)
    body = {"kind": "upscale", "checkpoint": keys["sr"], "num": 2, "seed": 1, "image": b64(small),
            "filename": "small.png"}
    last = finish(base, call(f"{base}/api/jobs", body, client="upscale")[1])
    cli("upscale", "--checkpoint", keys["sr"], "--image", small, "--num", 2, "--seed", 1, "--out",
        tmp_path / "cli.png")
    assert np.array_equal(pixels(fetch(base + last["urls"]["grid"])), read(tmp_path / "cli.png"))


def test_explain_draws_the_maps(served):
    base, keys, digit, _ = served
    body = {"kind": "explain", "checkpoint": keys["tf"], "image": b64(digit), "filename": "digit.png"}
    nll = finish(base, call(f"{base}/api/jobs", {**body, "what": "nll"}, client="explain")[1])
    model = checkpoint.load(keys["tf"])
    bits = nll_map(model, read_image(digit, 1, (8, 8)).long())
    assert nll["summary"].startswith(f"{float(bits.mean()):.4f} bits/dim")
    for what in ("nll", "attention", "receptive-field"):
        last = finish(base, call(f"{base}/api/jobs", {**body, "what": what, "row": 3, "col": 5},
                                 client="explain")[1])
        assert last["state"] == "done", last
        picture = Image.open(io.BytesIO(fetch(base + last["urls"][what])))
        assert picture.format == "PNG" and picture.width > 200
    status, answer = call(f"{base}/api/jobs", {**body, "checkpoint": keys["px"], "what": "attention",
                                               "row": 1, "col": 1}, client="explain")
    assert status == 400 and "has no attention" in answer["error"]


def test_preview_reads_the_upload_as_the_model_will(served):
    base, keys, digit, _ = served
    status, answer = call(f"{base}/api/preview", {"checkpoint": keys["sr"], "image": b64(digit),
                                                  "filename": "digit.png", "resize": True, "low": True})
    assert status == 200 and answer["shape"] == [1, 4, 4] and answer["name"] == "digit.png"
    status, answer = call(f"{base}/api/preview", {"checkpoint": keys["px"], "digit": "mnist_test_0",
                                                  "resize": True})
    assert status == 200 and pixels(base64.b64decode(answer["image"].split(",")[1])).shape == (8, 8)


BAD = [
    ({"kind": "draw"}, 400, "kind: choose sample, complete, upscale or explain"),
    ({"kind": "sample", "checkpoint": "/etc"}, 400, "is not served here"),
    ({"kind": "sample"}, 400, "checkpoint: missing: choose one of"),
    ({"kind": "sample", "checkpoint": "px", "num": 17}, 400, "num: 17 is not in the range 1<=x<=16"),
    ({"kind": "sample", "checkpoint": "px", "temperature": "hot"}, 400, "temperature: 'hot' is not a number"),
    ({"kind": "sample", "checkpoint": "px", "seed": -1}, 400, "seed:"),
    ({"kind": "sample", "checkpoint": "px", "label": 3}, 400, "this checkpoint is unconditional"),
    ({"kind": "sample", "checkpoint": "sr"}, 400, "is a super-resolution checkpoint"),
    ({"kind": "upscale", "checkpoint": "px", "digit": "mnist_test_0"}, 400, "is not a super-resolution"),
    ({"kind": "complete", "checkpoint": "px", "keep_rows": 2}, 400, "no image: upload a file"),
    ({"kind": "complete", "checkpoint": "px", "digit": "../../etc/passwd", "keep_rows": 2}, 400,
     "no test digit"),
    ({"kind": "complete", "checkpoint": "px", "digit": "mnist_test_0", "keep_rows": 2}, 400,
     "mnist_test_0.png is 28x28 pixels but the model takes 8x8: give a 8x8 image, or tick resize"),
    ({"kind": "complete", "checkpoint": "px", "digit": "mnist_test_0", "resize": True}, 400,
     "say what to keep"),
    ({"kind": "complete", "checkpoint": "px", "digit": "mnist_test_0", "resize": True, "keep_rows": 9}, 400,
     "keep_rows: 9 is not in the range 0<=x<=8"),
    ({"kind": "complete", "checkpoint": "px", "digit": "mnist_test_0", "resize": True, "mask": "101"}, 400,
     "mask: give 64 characters 0 or 1"),
    ({"kind": "complete", "checkpoint": "px", "image": "not base64!", "keep_rows": 2}, 400,
     "not valid base64"),
    ({"kind": "complete", "checkpoint": "px", "image": base64.b64encode(b"\x89PNG\r\n\x1a\n broken").decode(),
      "filename": "../corrupt.png", "keep_rows": 2}, 400, "corrupt.png: cannot read this image ("),
    ({"kind": "complete", "checkpoint": "px", "image": base64.b64encode(bytes(70_000)).decode(),
      "filename": "big.png", "keep_rows": 2}, 413, "larger than 0.0625 MiB"),
    ({"kind": "explain", "checkpoint": "tf", "what": "attention", "digit": "mnist_test_0", "resize": True,
      "row": 8, "col": 0}, 400, "row: 8 is not in the range 0<=x<=7"),
    ({"kind": "explain", "checkpoint": "tf", "what": "guess"}, 400, "what: choose nll, attention"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[m for _, _, m in BAD])
def test_a_bad_request_gets_one_readable_line(served, body, status, message):
    base, keys, _, _ = served
    body = {**body, "checkpoint": keys.get(body.get("checkpoint"), body.get("checkpoint"))}
    got, answer = call(f"{base}/api/jobs", body, client="bad")
    assert got == status and message in answer["error"], answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert "imagegen-serve-" not in answer["error"]  # an upload is named as sent, not where the server put it


def test_too_many_pixels_are_refused_before_decoding(served, tmp_path):
    base, keys, _, _ = served
    wide = png_file(tmp_path / "wide.png", (101, 100))
    got, answer = call(f"{base}/api/preview", {"checkpoint": keys["px"], "image": b64(wide),
                                               "filename": "wide.png", "resize": True})
    assert got == 413 and "wide.png is 100x101 pixels, more than the 10,000" in answer["error"]


@pytest.mark.parametrize("what", ["not json", "wrong type", "unknown job", "unknown page", "other host"])
def test_protocol_mistakes_get_json_errors(served, what):
    base, _, _, _ = served
    url, data, headers = f"{base}/api/jobs", b"{}", {"Content-Type": "application/json"}
    expected = {"not json": (415, "send the request as JSON"), "wrong type": (400, "not valid JSON"),
                "unknown job": (404, "no such request"), "unknown page": (404, "Not Found"),
                "other host": (400, "Invalid host header")}[what]
    if what == "not json":
        headers = {"Content-Type": "text/plain"}
    elif what == "wrong type":
        data = b"{"
    elif what == "unknown job":
        url, data = f"{base}/api/jobs/nope", None
    elif what == "unknown page":
        url, data = f"{base}/nothing", None
    else:
        headers["Host"] = "attacker.example"
    request = urllib.request.Request(url, data=data, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    body = error.value.read().decode()
    assert error.value.code == expected[0] and expected[1] in body
    if what != "other host":
        assert json.loads(body)["error"]


def slow_job(base: str, keys: dict, client: str) -> dict:
    body = {"kind": "sample", "checkpoint": keys["slow"], "num": 2, "seed": 0}
    status, job = call(f"{base}/api/jobs", body, client=client)
    assert status == 202, job
    return job


def test_stop_ends_the_sampler_mid_generation(served):
    base, keys, _, _ = served
    job = slow_job(base, keys, "stopper")
    stream = events(f"{base}/api/jobs/{job['id']}/events")
    for snap in stream:
        if snap.get("frame") and snap["state"] == "running":
            break
    assert call(f"{base}/api/jobs/{job['id']}/stop", {}, client="stopper")[0] == 200
    last = [*stream][-1]
    assert last["state"] == "stopped" and 0 < last["done"] < last["total"] == 96 * 96
    time.sleep(0.3)
    assert call(f"{base}/api/jobs/{job['id']}")[1]["done"] == last["done"]  # the loop is over


def test_the_server_survives_a_page_closing_mid_generation(served):
    base, keys, _, _ = served
    job = slow_job(base, keys, "leaver")
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET /api/jobs/{job['id']}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = b""
        while b'"frame": "data:' not in received:  # the first row is written
            received += sock.recv(65536)
    deadline = time.monotonic() + 20
    while (snap := call(f"{base}/api/jobs/{job['id']}")[1])["state"] == "running":
        assert time.monotonic() < deadline, "the job of a closed page kept running"
        time.sleep(0.1)
    assert snap["state"] == "stopped" and 0 < snap["done"] < snap["total"]
    after = finish(base, call(f"{base}/api/jobs", {"kind": "sample", "checkpoint": keys["px"], "num": 1},
                              client="leaver")[1])
    assert after["state"] == "done"


def test_a_waiting_job_whose_page_closes_leaves_the_queue_at_once(served):
    base, keys, _, _ = served
    running = slow_job(base, keys, "first")
    waiting = slow_job(base, keys, "second")
    assert waiting["state"] == "queued"
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET /api/jobs/{waiting['id']}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = b""
        while b'"state": "queued"' not in received:
            received += sock.recv(65536)
    deadline = time.monotonic() + 10
    while call(f"{base}/api/jobs/{waiting['id']}")[1]["state"] == "queued":
        assert time.monotonic() < deadline, "the job of a closed page still waits"
        time.sleep(0.05)
    assert call(f"{base}/api/jobs/{running['id']}")[1]["state"] == "running"
    again = slow_job(base, keys, "second")  # its client may ask again, while the first job still runs
    for job, client in ((again, "second"), (running, "first")):
        call(f"{base}/api/jobs/{job['id']}/stop", {}, client=client)
    assert finish(base, again)["state"] == "stopped" and finish(base, running)["state"] == "stopped"


def test_nothing_is_written_outside_a_temporary_directory(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    torch.manual_seed(0)
    key = str(checkpoint.save(build_model("gated_pixelcnn", channels=1, image_size=8, hidden=4, num_layers=2),
                              tmp_path / "ckpt"))
    digit = png_file(tmp_path / "digit.png", (8, 8), 100)
    before = sorted(p.name for p in tmp_path.iterdir())
    with running(create_app([key], limits=LIMITS)) as base:
        for extra in ({"kind": "complete", "keep_rows": 2}, {"kind": "explain", "what": "nll"}):
            body = {"checkpoint": key, "num": 1, "image": b64(digit), "filename": "digit.png", **extra}
            assert finish(base, call(f"{base}/api/jobs", body)[1])["state"] == "done"
        during = [p.name for p in (tmp_path / "tmp").iterdir()]
        assert len(during) == 1 and during[0].startswith("imagegen-serve-")
        assert not any((tmp_path / "tmp" / during[0]).iterdir())  # uploads and pictures removed at once
    assert not any((tmp_path / "cwd").iterdir()) and not any((tmp_path / "tmp").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_serve_says_how_to_install_the_web_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert result.output.strip() == ('error: `imagegen serve` needs uvicorn, which is not installed: '
                                     'pip install "imagegen[web]"')


def test_cli_serve_refuses_a_port_in_use():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot listen on 127.0.0.1:{port} (Address already in use)")


def test_cli_serve_listens_on_localhost_by_default(tmp_path, monkeypatch):
    import imagegen.serve

    torch.manual_seed(0)
    key = checkpoint.save(build_model("gated_pixelcnn", channels=1, image_size=8, hidden=4, num_layers=2),
                          tmp_path / "ckpt")
    seen = {}
    monkeypatch.setattr(imagegen.serve, "run",
                        lambda app, sock: seen.update(app=app, address=sock.getsockname()))
    result = CliRunner().invoke(main, ["serve", "--checkpoint", str(key), "--port", "0"])
    assert result.exit_code == 0, result.output
    host, port = seen["address"][:2]
    assert host == "127.0.0.1"
    assert result.output == f"serving {key} on http://127.0.0.1:{port}/ (Ctrl-C to stop)\n"
    assert list(seen["app"].state.server.catalog.served) == [str(key)]
