"""The web app of ``imagegen serve`` (Starlette): the page, its JSON API and the event streams.

Routes (every error is JSON ``{"error": "one line"}`` with a 4xx status, never a traceback page):

- ``GET /`` the page; ``GET /static/...`` its script, style and test digits.
- ``GET /api/info`` the checkpoints (shape, levels, labels, attention), limits and test digits.
- ``POST /api/preview`` an upload (or digit) read at a checkpoint's size, as the model will see it.
- ``POST /api/jobs`` a sample, complete, upscale or explain request: 202 and the job, or 429 when
  this client has one unfinished, 503 when the queue is full.
- ``GET /api/jobs/{id}/events`` server-sent events until the job ends; ``POST /api/jobs/{id}/stop``;
  ``GET /api/jobs/{id}/{name}.png`` its pictures.

Requests are JSON (``Content-Type: application/json``, which a page of another site cannot send
here without the browser asking first) of bounded size; a client is named by its ``X-Client`` header
(each open page makes one up), else by its address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import tempfile
from pathlib import Path

import click
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import completion
from ..imageio import from_uint8
from ..options import SEED, TEMPERATURE
from ..reporting import explain
from . import uploads
from .catalog import Catalog, Served
from .jobs import Job, JobQueue
from .limits import REQUIRED, Limits, Refused, param
from .pictures import data_url, png
from .streaming import job_events
from .tasks import Complete, Explain, Sample, Upscale

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost")
log = logging.getLogger("imagegen.serve")


class Server:
    """The state behind the routes: the ``catalog`` of checkpoints, the job ``queue`` and the
    temporary ``folder`` (both made when serving starts, gone when it stops)."""

    def __init__(self, catalog: Catalog, limits: Limits):
        self.catalog, self.limits = catalog, limits
        self.queue: JobQueue | None = None
        self.folder: Path | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        with tempfile.TemporaryDirectory(prefix="imagegen-serve-") as folder:
            self.folder, self.queue = Path(folder), JobQueue(self.limits)
            try:
                yield
            finally:
                self.queue.close()

    # --- requests in -----------------------------------------------------------------------------

    async def body(self, request: Request) -> dict:
        """The request's JSON object, read up to the upload limit (a base64 image and a little more)."""
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Refused(415, "send the request as JSON (Content-Type: application/json)")
        limit = self.limits.max_upload_bytes * 4 // 3 + 2**16
        if int(request.headers.get("content-length") or 0) > limit:
            raise Refused(413, uploads.too_large(self.limits))
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise Refused(413, uploads.too_large(self.limits))
        try:
            body = json.loads(data)
        except ValueError:
            raise Refused(400, "the request is not valid JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "the request must be a JSON object")
        return body

    @staticmethod
    def client(request: Request) -> str:
        given = request.headers.get("x-client", "")
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", given):
            return given
        return request.client.host if request.client else "unknown"

    def label(self, served: Served, body: dict, required: bool = False) -> int | None:
        classes = served.model.num_classes
        if not classes:
            if body.get("label") not in (None, ""):
                raise Refused(400, "label: this checkpoint is unconditional; leave the label empty")
            return None
        return param(body, "label", click.IntRange(0, classes - 1), REQUIRED if required else None)

    def image(self, served: Served, body: dict, low: bool = False) -> tuple:
        """The upload of ``body`` at the model's size (``low``: its low-resolution size) as model values
        ``(C, H, W)`` in ``[0, K)``, and its name."""
        model = served.model
        size = model.lowres_size if low else model.image_size
        image, name = uploads.read_upload(body, self.folder, self.limits, model.channels, size,
                                          "small image" if low else "image")
        return from_uint8(image, model.levels), name

    def task(self, body: dict):
        """The work ``body`` asks for, its inputs read and checked (``Refused`` at the first problem)."""
        kind = body.get("kind")
        if kind not in ("sample", "complete", "upscale", "explain"):
            raise Refused(400, "kind: choose sample, complete, upscale or explain")
        served = self.catalog.get(body.get("checkpoint"))
        model = served.model
        if kind == "explain":
            return self.explain(served, body)
        if bool(model.upscale_factor) != (kind == "upscale"):
            other = self.catalog.first(kind == "upscale")
            article = "a" if model.upscale_factor else "not a"
            instead = f"choose {other.name}" if other else "serve another checkpoint"
            raise Refused(400, f"{served.name} is {article} super-resolution checkpoint: {instead} to {kind}")
        sampling = dict(num=param(body, "num", click.IntRange(1, self.limits.max_images), 4),
                        temperature=param(body, "temperature", TEMPERATURE, 1.0),
                        seed=param(body, "seed", SEED, None))
        if sampling["seed"] is None:  # drawn here, so that the page can show it and the CLI repeat it
            sampling["seed"] = secrets.randbelow(2**32)
        if kind == "sample":
            return Sample(served, label=self.label(served, body), **sampling)
        resize = bool(body.get("resize"))
        if kind == "upscale":
            low, name = self.image(served, body, low=True)
            return Upscale(served, low, filename=name, resize=resize, **sampling)
        image, name = self.image(served, body)
        keep, rows = self.keep(served, body)
        return Complete(served, image, keep, filename=name, keep_rows=rows, label=self.label(served, body),
                        resize=resize, **sampling)

    @staticmethod
    def keep(served: Served, body: dict) -> tuple:
        """What to keep of the image: ``(mask (C, H, W) bool, rows)`` from ``keep_rows`` (the top rows;
        ``rows`` is their number) or ``mask`` (``H*W`` characters 0/1, row after row; ``rows`` None)."""
        C, H, W = served.model.shape
        rows, mask = body.get("keep_rows"), body.get("mask")
        if (rows in (None, "")) == (mask in (None, "")):
            raise Refused(400, "say what to keep: the top rows, or a mask drawn on the image")
        if mask in (None, ""):
            rows = param(body, "keep_rows", click.IntRange(0, H))
            return completion.keep_rows(served.model.shape, rows), rows
        if not (isinstance(mask, str) and len(mask) == H * W and set(mask) <= {"0", "1"}):
            raise Refused(400, f"mask: give {H * W} characters 0 or 1, one per pixel, row after row")
        keep = torch.tensor([c == "1" for c in mask]).view(1, H, W)
        return keep.expand(C, H, W).clone(), None

    def explain(self, served: Served, body: dict) -> Explain:
        what = body.get("what")
        if what not in ("nll", "attention", "receptive-field"):
            raise Refused(400, "what: choose nll, attention or receptive-field")
        if what == "attention" and not served.info()["attention"]:
            raise Refused(400, f"{served.title} has no attention: choose an Image Transformer checkpoint")
        C, H, W = served.model.shape
        pixel = None
        if what != "nll":
            pixel = (param(body, "channel", click.IntRange(0, C - 1), 0),
                     param(body, "row", click.IntRange(0, H - 1)),
                     param(body, "col", click.IntRange(0, W - 1)))
        label = self.label(served, body, required=True)
        image, name = self.image(served, body)
        return Explain(served, what, image, name, self.folder, pixel, label)

    # --- routes ----------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def info(self, request: Request) -> Response:
        return JSONResponse({"checkpoints": [s.info() for s in self.catalog.served.values()],
                             "limits": self.limits.as_json(), "digits": uploads.digits()})

    async def preview(self, request: Request) -> Response:
        body = await self.body(request)
        served = self.catalog.get(body.get("checkpoint"))
        model = served.model
        low = bool(body.get("low")) and bool(model.upscale_factor)
        size = model.lowres_size if low else model.image_size
        image, name = await run_in_threadpool(uploads.read_upload, body, self.folder, self.limits,
                                              model.channels, size)
        return JSONResponse({"image": data_url(png(image)), "name": name, "shape": list(image.shape)})

    async def submit(self, request: Request) -> Response:
        body = await self.body(request)
        work = await run_in_threadpool(self.task, body)
        job = self.queue.submit(Job(body["kind"], self.client(request), work))
        return JSONResponse(job.snapshot(), status_code=202)

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.queue.get(request.path_params["id"]).snapshot())

    async def events(self, request: Request) -> Response:
        job = self.queue.get(request.path_params["id"])
        stream = job_events(job, f"/api/jobs/{job.id}", abandon=lambda: self.queue.stop(job.id))
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def stop(self, request: Request) -> Response:
        return JSONResponse(self.queue.stop(request.path_params["id"]).snapshot())

    async def picture(self, request: Request) -> Response:
        job = self.queue.get(request.path_params["id"])
        name = request.path_params["name"]
        if job.result is None or name not in job.result.pictures:
            raise Refused(404, f"this request has no picture {name!r}" + ("" if job.finished else " yet"))
        return Response(job.result.pictures[name], media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="imagegen-{job.kind}-{name}.png"',
                                 "Cache-Control": "no-store"})


async def _refused(request: Request, exc: Refused) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return JSONResponse({"error": exc.message}, exc.status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, exc.status_code)


async def _crashed(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": explain(exc)[0]}, 500)


def create_app(checkpoints: list[str] | None = None, *, device: str = "cpu", limits: Limits | None = None,
               host: str = "127.0.0.1") -> Starlette:
    """The app serving ``checkpoints`` (names or directories; None: every shipped one), loaded now
    (a bad one raises ``ImagegenError``). Served on a loopback ``host``, it answers only requests
    addressed to 127.0.0.1 or localhost (a web page elsewhere cannot reach it by renaming itself)."""
    server = Server(Catalog(checkpoints, device), limits or Limits())
    routes = [
        Route("/", server.page),
        Route("/api/info", server.info),
        Route("/api/preview", server.preview, methods=["POST"]),
        Route("/api/jobs", server.submit, methods=["POST"]),
        Route("/api/jobs/{id}", server.status),
        Route("/api/jobs/{id}/events", server.events),
        Route("/api/jobs/{id}/stop", server.stop, methods=["POST"]),
        Route("/api/jobs/{id}/{name}.png", server.picture),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK))] if host in LOOPBACK else []
    app = Starlette(routes=routes, middleware=middleware, lifespan=server.lifespan,
                    exception_handlers={Refused: _refused, HTTPException: _http_error, Exception: _crashed})
    app.state.server = server
    return app
