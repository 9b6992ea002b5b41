"""The job queue of ``imagegen serve`` (imagegen.serve.jobs) without a server: the bounds, Stop, and
the worker threads. Work functions are made to block on events, so every state is seen for sure."""

from __future__ import annotations

import threading
import time

import pytest

from imagegen.errors import ImagegenError
from imagegen.serve.jobs import DONE, FAILED, QUEUED, RUNNING, STOPPED, Job, JobQueue, Result
from imagegen.serve.limits import Limits, Refused


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class Blocking:
    """Work that steps through ``total`` sub-pixels, waiting for ``go`` before the first; counts the
    steps it took."""

    def __init__(self, total: int = 1000):
        self.go, self.total, self.steps = threading.Event(), total, 0

    def __call__(self, job: Job) -> Result:
        self.go.wait(10)
        for t in range(1, self.total + 1):
            job.step(t, self.total)
            self.steps = t
            time.sleep(0.001)
        return Result({"grid": b"png"}, "made")


@pytest.fixture()
def queue():
    q = JobQueue(Limits(queue_length=2, workers=1, keep_results=3))
    yield q
    q.close()


def test_a_job_runs_to_done_and_keeps_its_result(queue):
    work = Blocking(total=3)
    job = queue.submit(Job("sample", "a", work))
    work.go.set()
    wait_for(lambda: job.finished)
    assert job.state == DONE and job.result.pictures == {"grid": b"png"} and (job.done, job.total) == (3, 3)
    assert queue.get(job.id) is job


def test_one_unfinished_job_per_client(queue):
    work = Blocking()
    queue.submit(Job("sample", "a", work))
    with pytest.raises(Refused) as refused:
        queue.submit(Job("complete", "a", Blocking()))
    assert refused.value.status == 429 and "already have a sample request" in refused.value.message
    queue.submit(Job("sample", "b", Blocking()))  # another client is fine
    work.go.set()


def test_a_full_queue_refuses_with_503(queue):
    works = [Blocking() for _ in range(4)]
    running = queue.submit(Job("sample", "a", works[0]))
    wait_for(lambda: running.state == RUNNING)
    waiting = [queue.submit(Job("sample", c, w)) for c, w in zip("bc", works[1:3], strict=True)]
    assert [j.state for j in waiting] == [QUEUED, QUEUED] and [j.position for j in waiting] == [1, 2]
    with pytest.raises(Refused) as refused:
        queue.submit(Job("sample", "d", works[3]))
    assert refused.value.status == 503 and "busy" in refused.value.message and refused.value.retry_after
    for w in works:
        w.go.set()
    wait_for(lambda: all(j.state == DONE for j in [running, *waiting]))


def test_stop_ends_a_running_job_at_its_next_step(queue):
    work = Blocking(total=100_000)
    job = queue.submit(Job("sample", "a", work))
    work.go.set()
    wait_for(lambda: work.steps > 10)
    queue.stop(job.id)
    wait_for(lambda: job.finished)
    assert job.state == STOPPED and job.done < job.total
    steps = work.steps
    time.sleep(0.05)
    assert work.steps == steps  # the loop is over, not running on in the background
    after = queue.submit(Job("sample", "a", Blocking(total=1)))  # the client's slot is free again
    after.work.go.set()
    wait_for(lambda: after.state == DONE)


def test_stop_takes_a_waiting_job_off_the_queue(queue):
    first, second = Blocking(), Blocking()
    running = queue.submit(Job("sample", "a", first))
    wait_for(lambda: running.state == RUNNING)
    waiting = queue.submit(Job("sample", "b", second))
    queue.stop(waiting.id)
    assert waiting.state == STOPPED and queue.pending() == 0
    first.go.set()
    wait_for(lambda: running.state == DONE)
    assert second.steps == 0  # never started


def test_a_failing_job_reports_one_line_and_the_worker_goes_on(queue):
    def broken(job):
        raise ImagegenError("the model gave non-finite logits")

    def bug(job):
        raise KeyError("oops")

    jobs = [queue.submit(Job("sample", c, w)) for c, w in (("a", broken), ("b", bug))]
    wait_for(lambda: all(j.finished for j in jobs))
    assert [j.state for j in jobs] == [FAILED, FAILED]
    assert jobs[0].snapshot()["error"] == "the model gave non-finite logits"
    assert "a bug in imagegen" in jobs[1].snapshot()["error"]
    ok = queue.submit(Job("sample", "c", Blocking(total=1)))
    ok.work.go.set()
    wait_for(lambda: ok.state == DONE)


def test_old_results_are_forgotten(queue):
    jobs = []
    for _ in range(5):
        work = Blocking(total=1)
        work.go.set()
        jobs.append(queue.submit(Job("sample", "a", work)))
        wait_for(lambda: jobs[-1].finished)  # noqa: B023
    with pytest.raises(Refused) as refused:
        queue.get(jobs[0].id)
    assert refused.value.status == 404
    assert queue.get(jobs[-1].id) is jobs[-1]


def test_close_stops_running_and_waiting_jobs_and_joins_the_threads():
    q = JobQueue(Limits(queue_length=4, workers=2))
    works = [Blocking(total=10**9) for _ in range(3)]
    jobs = [q.submit(Job("sample", c, w)) for c, w in zip("abc", works, strict=True)]
    for w in works:
        w.go.set()
    wait_for(lambda: sum(j.state == RUNNING for j in jobs) == 2)
    q.close()
    assert all(j.state == STOPPED for j in jobs)
    assert not any(t.is_alive() for t in q._threads)
