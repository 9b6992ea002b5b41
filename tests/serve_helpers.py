"""Running ``imagegen serve``'s app on a free localhost port inside a test, and talking to it."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread, on 127.0.0.1 and a free port; yields its base URL. The
    server (and its job queue) is shut down after the block."""
    import uvicorn

    from imagegen.serve import listen

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the server did not shut down"


def call(url: str, body: dict | None = None, client: str = "test", timeout: float = 60) -> tuple[int, dict]:
    """GET (``body`` None) or POST JSON ``body`` to ``url``: ``(status, JSON answer)``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              "X-Client": client})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def events(url: str, timeout: float = 120) -> Iterator[dict]:
    """The server-sent events of a job (``.../events``), decoded, until the stream ends."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        for line in response:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])


def finish(base: str, job: dict) -> dict:
    """Watch ``job`` to its end; its last snapshot."""
    return [job, *events(f"{base}/api/jobs/{job['id']}/events")][-1]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()
