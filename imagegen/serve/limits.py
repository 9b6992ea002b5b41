"""What one request to ``imagegen serve`` may ask for, how its fields are checked, and the refusal it
gets otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Limits:
    """The bounds of the server.

    max_images: images one request may sample, complete or upscale.
    max_upload_bytes: size of an uploaded image file (the request body may be a third larger: base64).
    max_pixels: width x height of an uploaded image, checked before it is decoded.
    queue_length: requests waiting for a worker; one more is refused with 503.
    workers: requests worked on at once (one thread each; requests on one checkpoint take turns).
    keep_results: finished requests whose pictures stay downloadable (the oldest are forgotten).
    """

    max_images: int = 16
    max_upload_bytes: int = 2 * 2**20
    max_pixels: int = 4096 * 4096
    queue_length: int = 8
    workers: int = 1
    keep_results: int = 64

    def as_json(self) -> dict:
        return {"max_images": self.max_images, "max_upload_bytes": self.max_upload_bytes,
                "max_pixels": self.max_pixels, "queue_length": self.queue_length}


class Refused(Exception):
    """A request the server will not do, with the HTTP ``status`` and a one-line ``message`` for the
    page (400 bad input, 404 unknown, 413 too large, 429 this client is busy, 503 the queue is full)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


REQUIRED = object()


def param(body: dict, name: str, kind: click.ParamType, default=REQUIRED):
    """``body[name]`` checked and converted by the CLI's option type ``kind`` (the same ranges and
    messages); ``default`` when it is absent or empty; ``Refused`` (400) naming the field otherwise."""
    value = body.get(name)
    if value is None or value == "":
        if default is REQUIRED:
            raise Refused(400, f"{name}: missing")
        return default
    try:
        return kind.convert(value, None, None)
    except click.BadParameter as e:
        raise Refused(400, f"{name}: {e.message}") from None
