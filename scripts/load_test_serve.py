"""Load test of ``imagegen serve``, on localhost only, bounded in clients and time.

    python scripts/load_test_serve.py                         # 20 clients for 60 s, the shipped default
    python scripts/load_test_serve.py --clients 5 --seconds 10 --num 1      # a quick look

Starts ``imagegen serve`` on 127.0.0.1 (a free port) in a child process and runs ``--clients``
threads against it for ``--seconds``: each client in turn samples ``--num`` images and completes a
shipped test digit (its top half kept), watches the server-sent events to the end, and every fourth
request closes the stream after the first row instead (a page closed mid-generation). A request the
queue refuses (429 this client is busy, 503 the queue is full) is retried after a second.

At the end every client leaves the job it watches (the server stops it). Prints a markdown table:
requests by outcome and HTTP status, latency of the finished ones, and the server's resident memory
(RSS) after a warm-up, every tenth of the run, after the load, and its peak. Exits 1 if any
request got a 5xx, a connection error or an answer without a readable ``error``, if the server
logged a traceback, or if it does not answer afterwards.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import markdown_table

HOST = "127.0.0.1"  # never anything else: this script loads a server, it must be ours


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of process ``pid`` in MiB (``VmHWM``: its peak)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) / 1024


def post(url: str, body: dict, client: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-Client": client})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:  # not the JSON every answer of the server should be
            return e.code, {}


def watch(url: str, leave_early: bool, deadline: float = float("inf")) -> str:
    """Read a job's events to its final state (or, with ``leave_early``, until its first frame; at the
    ``deadline``, leave: the server stops a job nobody watches)."""
    state = "?"
    with urllib.request.urlopen(url, timeout=300) as response:
        for line in response:  # a line at least every second: the server's keep-alive
            if time.monotonic() > deadline:
                return "left at the end of the test"
            if not line.startswith(b"data: "):
                continue
            snap = json.loads(line[6:])
            state = snap["state"]
            if leave_early and snap.get("frame"):
                return "left mid-generation"
    return state


class Tally:
    """Outcomes of all clients, under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes: collections.Counter = collections.Counter()
        self.latency: list[float] = []
        self.refusal: list[float] = []
        self.problems: list[str] = []

    def add(self, outcome: str, seconds: float | None = None, problem: str | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if seconds is not None:
                self.latency.append(seconds)
            if problem:
                self.problems.append(problem)


def client(base: str, name: str, args, deadline: float, tally: Tally) -> None:
    requests = [{"kind": "sample", "checkpoint": args.checkpoint, "num": args.num},
                {"kind": "complete", "checkpoint": args.checkpoint, "num": args.num, "digit": "mnist_test_0",
                 "keep_rows": 14}]
    k = 0
    while time.monotonic() < deadline:
        body = requests[k % 2]
        k += 1
        start = time.monotonic()
        try:
            status, answer = post(f"{base}/api/jobs", body, name)
            if status == 202:
                outcome = watch(f"{base}/api/jobs/{answer['id']}/events", k % 4 == 0, deadline)
                done = outcome == "done"
                tally.add(f"{body['kind']}: {outcome}", time.monotonic() - start if done else None,
                          None if done or outcome.startswith("left") else f"{body['kind']} {outcome}")
            elif status in (429, 503) and answer.get("error"):
                tally.add(f"refused {status}")
                with tally.lock:
                    tally.refusal.append(time.monotonic() - start)
                time.sleep(1.0)
            else:
                tally.add(f"HTTP {status}", problem=f"{status}: {answer}")
        except Exception as e:  # a connection refused or reset: the server failed this client
            tally.add("connection error", problem=f"{type(e).__name__}: {e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, choices=range(1, 101), metavar="1..100")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--checkpoint", default="mnist_gated_pixelcnn")
    parser.add_argument("--num", type=int, default=2, help="images per request")
    parser.add_argument("--queue", type=int, default=8, help="the server's --queue")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds: 1..600")

    load = os.getloadavg()[0]
    errors = tempfile.TemporaryFile("w+")  # the server's log: a pipe nobody reads would block it when full
    server = subprocess.Popen([sys.executable, "-m", "imagegen.cli", "serve", "--checkpoint", args.checkpoint,
                               "--host", HOST, "--port", "0", "--queue", str(args.queue)],
                              stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not found:
            server.wait(timeout=60)
            errors.seek(0)
            print(f"the server did not start: {line}{errors.read()}", file=sys.stderr)
            return 1
        base = f"http://{HOST}:{found.group(1)}"
        for body in ({"kind": "sample"}, {"kind": "complete", "digit": "mnist_test_0", "keep_rows": 14}):
            status, job = post(f"{base}/api/jobs", {**body, "checkpoint": args.checkpoint, "num": args.num},
                               "warm-up")
            assert status == 202, job
            watch(f"{base}/api/jobs/{job['id']}/events", leave_early=False)
        before = rss_mib(server.pid)

        tally, start = Tally(), time.monotonic()
        deadline = start + args.seconds
        threads = [threading.Thread(target=client, args=(base, f"client-{c}", args, deadline, tally))
                   for c in range(args.clients)]
        for t in threads:
            t.start()
        series = []  # the server's RSS at every tenth of the run
        for k in range(1, 11):
            time.sleep(max(0.0, start + k * args.seconds / 10 - time.monotonic()))
            series.append(rss_mib(server.pid))
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        time.sleep(1.0)  # stopped jobs of pages that left finish their step
        after, peak = rss_mib(server.pid), rss_mib(server.pid, "VmHWM")
        try:
            body = {"kind": "sample", "checkpoint": args.checkpoint, "num": 1}
            status, job = post(f"{base}/api/jobs", body, "afterwards")
            healthy = status == 202 and watch(f"{base}/api/jobs/{job['id']}/events", False) == "done"
        except Exception as e:  # no answer: said below, with what went wrong before
            healthy = False
            tally.add("afterwards: no answer", problem=f"afterwards: {type(e).__name__}: {e}")
    finally:
        server.terminate()
        server.communicate(timeout=60)
        errors.seek(0)
        log = errors.read()

    lat = sorted(tally.latency)
    rows = [[outcome, str(n)] for outcome, n in sorted(tally.outcomes.items())]
    rows.append(["all requests", str(sum(tally.outcomes.values()))])
    names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    cpu = names[0] if names else platform.machine()
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), "
          f"load average at the start {load:.1f}; {args.clients} clients for {elapsed:.0f} s, "
          f"{args.checkpoint}, {args.num} images per request, queue {args.queue}, 1 worker")
    print(markdown_table(["outcome", "requests"], rows))
    timings = (("finished requests (queue wait included)", lat), ("refusals", sorted(tally.refusal)))
    for what, times in timings:
        if times:
            p90 = times[math.ceil(0.9 * len(times)) - 1]  # nearest rank
            print(f"\n{what}: latency median {statistics.median(times):.3g} s, "
                  f"90th percentile {p90:.3g} s, max {times[-1]:.3g} s")
    print(f"server RSS: {before:.0f} MiB after warm-up, {after:.0f} MiB after the load "
          f"({after - before:+.0f} MiB), peak {peak:.0f} MiB; every tenth of the run: "
          f"{', '.join(f'{m:.0f}' for m in series)} MiB; "
          f"answers afterwards: {'yes' if healthy else 'NO'}")
    tracebacks = log.count("Traceback")
    print(f"server log: {tracebacks} traceback(s)")
    for problem in tally.problems[:10]:
        print(f"problem: {problem}")
    return 0 if healthy and not tally.problems and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
