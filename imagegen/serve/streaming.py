"""A job as server-sent events: a JSON snapshot (with the live canvas) whenever the job changes,
until it is done, stopped or failed. A comment line every second keeps the stream open and finds
out when the page has gone (the next write fails), which stops a job nobody watches any more."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

from .jobs import FINAL, Job
from .pictures import data_url


def event(data: dict) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data)}\n\n"


async def job_events(job: Job, pictures_url: str, abandon: Callable[[], object], keepalive: float = 1.0
                     ) -> AsyncIterator[str]:
    """The events of ``job``: its ``snapshot()`` plus ``frame`` (a data URL of the canvas, when it
    changed) and ``urls`` of its pictures (``pictures_url/<name>.png``) once done. When the stream
    ends with the job unfinished and watched by no other stream, ``abandon()`` is called."""
    watcher = job.watch()
    try:
        seen, frame = -1, None
        while True:
            watcher.changed.clear()
            version, snap = job.version, job.snapshot()
            if version != seen:
                seen = version
                if job.frame is not frame:
                    frame = job.frame
                    snap["frame"] = data_url(frame) if frame else None
                snap["urls"] = {name: f"{pictures_url}/{name}.png" for name in snap["pictures"]}
                yield event(snap)
                if snap["state"] in FINAL:
                    return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watcher.changed.wait(), keepalive)
                continue
            yield ": still here\n\n"
    finally:
        if job.unwatch(watcher):
            abandon()
