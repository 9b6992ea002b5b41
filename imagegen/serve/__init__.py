"""``imagegen serve``: a local web page to sample, complete, upscale and explain, where each image is
shown as it is written, sub-pixel row by row, and Stop ends the sampler.

Needs the web extra (``pip install "imagegen[web]"``: Starlette and uvicorn). The parts: ``app`` (the
routes), ``jobs`` (the bounded queue and worker threads), ``tasks`` (what each request does with a
model), ``streaming`` (server-sent events), ``uploads`` (reading images with the CLI's reader),
``catalog`` (the served checkpoints), ``pictures`` (PNGs in memory), ``limits``, and ``static/`` (the
page: plain HTML, CSS and JavaScript, no build step).
"""

from __future__ import annotations

import os
import socket

from ..errors import ImagegenError

INSTALL = 'pip install "imagegen[web]"'


def require() -> None:
    """Raise a one-line ``ImagegenError`` saying how to install the web extra when it is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImagegenError(f"`imagegen serve` needs {e.name}, which is not installed: {INSTALL}") from None


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: a free one); ``ImagegenError`` when it cannot."""
    try:
        return socket.create_server((host, port))
    except OSError as e:
        reason = os.strerror(e.errno) if isinstance(e.errno, int) and e.errno > 0 else e.strerror or str(e)
        raise ImagegenError(f"cannot listen on {host}:{port} ({reason}): pass another --port, or --host "
                            "127.0.0.1") from None


def run(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` with uvicorn until Ctrl-C; then running jobs are stopped, their
    threads joined and the temporary folder removed."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3)).run(sockets=[sock])
