"""Where a server's time goes: py-spy attached to it during a load run, stacks summarised.

`start(pid, seconds, out)` samples every thread of a running process with py-spy (non-blocking,
so the server is never paused) into collapsed stacks; `summarize(text)` turns them into the
share of samples spent in each package (the leaf frame's top-level module: h11, starlette,
service, tensorflow...) and in each function (inclusive: the function or anything it called).
py-spy only samples threads that are running, so the shares are of busy time, not wall time.
`during(server, out, load)` profiles a server while `load()` runs and gives the table lines.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling `pid` (and its subprocesses) for `seconds` into `out` (collapsed stacks)."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return subprocess.Popen(
        [
            executable,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--nonblocking",
            "--subprocesses",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def package_of(frame: str) -> str:
    """`h11` for `Connection.next_event (h11/_connection.py:440)`; `asyncio`, `<frozen ...>`."""
    start = frame.rfind(" (")
    where = frame[start + 2 : -1] if start >= 0 and frame.endswith(")") else frame
    path = where.rsplit(":", 1)[0]
    if path.startswith("<"):
        return path
    head = path.split("/", 1)[0]
    return head[:-3] if head.endswith(".py") else head


def _function(frame: str) -> str:
    """The frame without its line number: `Connection.next_event (h11/_connection.py)`."""
    start = frame.rfind(" (")
    if start < 0 or not frame.endswith(")"):
        return frame
    return frame[:start] + " (" + frame[start + 2 : -1].rsplit(":", 1)[0] + ")"


#: Leaf frames of a thread that waits (a lock, a queue, the selector): not CPU time. py-spy's own
#: idle detection misses some of them (threads blocked in a C call that holds no lock).
WAITING = frozenset(
    {
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Queue.get (queue.py)",
        "EpollSelector.select (selectors.py)",
        "_worker (concurrent/futures/thread.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
    }
)


@dataclass
class Profile:
    samples: int = 0
    waiting: int = 0
    by_package: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def top_packages(self, n: int = 10) -> list[tuple[str, float]]:
        return [(k, v / self.samples) for k, v in self.by_package.most_common(n)]

    def top_functions(self, n: int = 15, skip: tuple[str, ...] = ()) -> list[tuple[str, float]]:
        rows = [(k, v) for k, v in self.inclusive.most_common() if not k.startswith(skip)]
        return [(k, v / self.samples) for k, v in rows[:n]]


def summarize(text: str) -> Profile:
    """Parse py-spy's raw (collapsed) output: `frame;frame;...;leaf count` per line; stacks
    that end in a wait count as `waiting`, apart from the busy `samples`."""
    profile = Profile()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # --subprocesses puts a `process <pid>:"<command line>"` frame at the root.
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            continue
        if _function(frames[-1]) in WAITING:
            profile.waiting += count
            continue
        profile.samples += count
        profile.by_package[package_of(frames[-1])] += count
        for name in {_function(frame) for frame in frames}:
            profile.inclusive[name] += count
    return profile


#: Frames every request passes through (event loop, thread bootstraps): left out of the "top
#: functions" list, which is about where time differs.
_GENERIC = ("<frozen runpy>", "asyncio", "threading", "concurrent")
_ENTRY = ("main (", "run (", "<module> (", "asyncio_run (", "Server.run (")


def lines(profile: Profile) -> list[str]:
    """The results-file lines of one profile: self time by package, top inclusive functions."""
    packages = ", ".join(f"{name} {share:.0%}" for name, share in profile.top_packages(8))
    functions = [
        (name, share)
        for name, share in profile.top_functions(200)
        if package_of(name) not in _GENERIC
        and not name.split(" (")[0].endswith("__call__")
        and not name.startswith(_ENTRY)
    ][:14]
    return [
        f"busy samples {profile.samples:,} (plus {profile.waiting:,} of threads waiting); "
        f"self time by package: {packages}",
        "",
        "| function (inclusive) | share of busy samples |",
        "| --- | ---: |",
        *(f"| `{name}` | {share:.0%} |" for name, share in functions),
    ]


def during(server: Any, out: Path, load: Callable[[], object], seconds: float = 6.0) -> list[str]:
    """Sample `server` (a `bench.harness.Server`) with py-spy while `load()` runs."""
    sampler = start(server.pids()[0], seconds, out)
    load()
    sampler.wait(timeout=seconds + 60)
    return lines(summarize(out.read_text() if out.exists() else ""))
