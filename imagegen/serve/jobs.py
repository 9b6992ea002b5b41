"""Requests as jobs: a bounded queue, worker threads, one unfinished job per client, Stop, and the
watchers that stream a job as it changes.

A job's work is a callable ``work(job) -> Result`` run on a worker thread. It reports with
``job.step(done, total)`` (which raises ``Stopped`` once Stop was pressed: the sampler's progress
callback) and ``job.show(frame)``; the asyncio side waits for changes with ``job.watch()``. Nothing
here knows about models or images.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..reporting import explain
from .limits import Limits, Refused

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
FINAL = (DONE, STOPPED, FAILED)
log = logging.getLogger("imagegen.serve")


class Stopped(Exception):
    """Raised inside a job's work by ``Job.step`` once the job is asked to stop."""


@dataclass
class Result:
    """What a finished job made: PNG files by name (``grid``, ``0``, ``1``, ..., or a map's name), a
    line saying what they are, and the ``imagegen`` command that makes the same pictures."""

    pictures: dict[str, bytes]
    summary: str = ""
    command: str = ""


@dataclass(eq=False)
class Watcher:
    """One open stream of a job: an asyncio event set (from any thread) whenever the job changes."""

    loop: asyncio.AbstractEventLoop
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.changed.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class Job:
    """One request: its ``work``, its state (``QUEUED`` -> ``RUNNING`` -> ``DONE``/``STOPPED``/``FAILED``),
    progress ``done`` of ``total`` sub-pixels, the latest live ``frame`` (PNG), its ``result`` or
    ``error``. ``version`` grows with every change a watcher should see."""

    def __init__(self, kind: str, client: str, work: Callable[[Job], Result]):
        self.id = secrets.token_urlsafe(12)
        self.kind, self.client, self.work = kind, client, work
        self.state, self.done, self.total, self.position = QUEUED, 0, 0, 0
        self.frame: bytes | None = None
        self.result: Result | None = None
        self.error = ""
        self.version = 0
        self.created = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watchers: set[Watcher] = set()

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    def step(self, done: int, total: int) -> None:
        """Progress: ``done`` of ``total`` sub-pixels; raises ``Stopped`` once the job is asked to stop.
        Cheap: called after every sub-pixel. Watchers see it with the next frame."""
        if self._stop.is_set():
            raise Stopped
        self.done, self.total = done, total

    def show(self, frame: bytes) -> None:
        """The canvas as it is now (PNG bytes), for the watchers."""
        self.frame = frame
        self._changed()

    def stop(self) -> None:
        """Ask the work to stop at its next ``step`` (a queued job never starts)."""
        self._stop.set()
        self._changed()

    def run(self) -> None:
        """Do the work on this thread; whatever it raises ends in the job's state, never escapes."""
        if self._stop.is_set():
            return self._finish(STOPPED)
        self.state = RUNNING
        self._changed()
        try:
            self.result = self.work(self)
        except Stopped:
            return self._finish(STOPPED)
        except Exception as e:  # a job's failure is reported to its page, and the server goes on
            message, code = explain(e)
            if code != 2:
                log.exception("job %s (%s) failed", self.id, self.kind)
            self.error = message
            return self._finish(FAILED)
        self._finish(DONE)

    def _finish(self, state: str) -> None:
        self.state = state
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            self.version += 1
            watchers = list(self._watchers)
        for w in watchers:
            w.notify()

    def watch(self) -> Watcher:
        """A ``Watcher`` notified on the running asyncio loop at every change; ``unwatch`` it after."""
        w = Watcher(asyncio.get_running_loop())
        with self._lock:
            self._watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> bool:
        """Forget ``w``; True when that leaves an unfinished job that nobody watches (its page was
        closed or reloaded), which is then better stopped."""
        with self._lock:
            self._watchers.discard(w)
            return not self._watchers and not self.finished

    def snapshot(self) -> dict:
        """The job as JSON for the page (the frame and pictures are fetched apart)."""
        result = self.result
        return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "position": self.position, "error": self.error if self.state == FAILED else "",
                "summary": result.summary if result else "", "command": result.command if result else "",
                "pictures": list(result.pictures) if result else []}


class JobQueue:
    """Jobs waiting for ``limits.workers`` worker threads, first come first served.

    ``submit`` refuses (``Refused``) a client that has an unfinished job (429) and a job beyond
    ``limits.queue_length`` waiting ones (503). Finished jobs stay findable by id until
    ``limits.keep_results`` newer ones have finished. ``close`` stops every job and joins the threads.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self._jobs: dict[str, Job] = {}
        self._active: dict[str, Job] = {}  # client -> its unfinished job
        self._pending: collections.deque[Job] = collections.deque()
        self._finished: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"imagegen-serve-worker-{k}", daemon=True)
                         for k in range(limits.workers)]
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._closed:
                raise Refused(503, "the server is shutting down")
            mine = self._active.get(job.client)
            if mine is not None:
                raise Refused(429, f"you already have a {mine.kind} request {mine.state}: wait for it to "
                                   "finish or press Stop", retry_after=1)
            if len(self._pending) >= self.limits.queue_length:
                raise Refused(503, f"the server is busy: {len(self._pending)} requests are waiting (the "
                                   "most it queues); try again in a moment", retry_after=5)
            self._jobs[job.id] = job
            self._active[job.client] = job
            self._pending.append(job)
            job.position = len(self._pending)
            self._cond.notify()
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise Refused(404, "no such request: it finished long ago and was forgotten, or the server "
                               "restarted; ask again")
        return job

    def stop(self, job_id: str) -> Job:
        """Stop a job: a waiting one is taken off the queue at once, a running one at its next step."""
        job = self.get(job_id)
        job.stop()
        with self._cond:
            waiting = job in self._pending
            if waiting:
                self._pending.remove(job)
                self._renumber()
                self._done(job)
        if waiting:
            job.run()  # no worker has it: it finishes as stopped on this thread
        return job

    def pending(self) -> int:
        return len(self._pending)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                self._renumber()
            job.position = 0
            try:
                job.run()
            finally:
                with self._cond:
                    self._done(job)

    def _renumber(self) -> None:
        for k, waiting in enumerate(self._pending, 1):
            if waiting.position != k:
                waiting.position = k
                waiting._changed()

    def _done(self, job: Job) -> None:
        """Under the lock: ``job`` no longer holds its client's slot; forget the oldest results."""
        if self._active.get(job.client) is job:
            del self._active[job.client]
        self._finished.append(job)
        while len(self._finished) > self.limits.keep_results:
            self._jobs.pop(self._finished.popleft().id, None)

    def close(self) -> None:
        """Stop every job, end the worker threads and wait for them."""
        with self._cond:
            self._closed = True
            jobs = list(self._jobs.values())
            self._cond.notify_all()
        for job in jobs:
            job.stop()
        for job in list(self._pending):
            job.run()
        for t in self._threads:
            t.join()
