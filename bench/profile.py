"""Where a server's time goes: py-spy attached to it during one extra, unmeasured load run
(`point`), its collapsed stacks summarised (`summarize`) as the share of busy samples in each
package (the leaf frame's top-level module) and in each function (inclusive); stacks that end in
a wait count apart.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import driver

#: Leaf frames of a thread that waits (a lock, a queue, the selector): not CPU time. py-spy's own
#: idle detection misses some of them (threads blocked in a C call that holds no lock).
WAITING = {
    *("Condition.wait (threading.py)", "Event.wait (threading.py)", "Queue.get (queue.py)"),
    *("EpollSelector.select (selectors.py)", "_worker (concurrent/futures/thread.py)"),
    "Thread._wait_for_tstate_lock (threading.py)",
}
#: Frames every request passes through (event loop, thread bootstraps, entry points): left out
#: of the "top functions" list, which is about where time differs.
GENERIC = ("<frozen runpy>", "asyncio", "threading", "concurrent")
ENTRY = ("main (", "run (", "<module> (", "asyncio_run (", "Server.run (")


def package_of(frame: str) -> str:
    """`h11` for `Connection.next_event (h11/_connection.py:440)`; `asyncio`, `<frozen ...>`."""
    path = _function(frame).rpartition(" (")[2].rstrip(")")
    return path if path.startswith("<") else path.split("/", 1)[0].removesuffix(".py")


def _function(frame: str) -> str:
    """The frame without its line number: `Connection.next_event (h11/_connection.py)`."""
    name, sep, where = frame.rpartition(" (")
    return f"{name} ({where[:-1].rsplit(':', 1)[0]})" if sep and frame.endswith(")") else frame


@dataclass
class Profile:
    samples: int = 0
    waiting: int = 0
    by_package: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def top_packages(self, n: int = 10) -> list[tuple[str, float]]:
        return [(k, v / self.samples) for k, v in self.by_package.most_common(n)]

    def top_functions(self, n: int = 15) -> list[tuple[str, float]]:
        return [(k, v / self.samples) for k, v in self.inclusive.most_common(n)]


def summarize(text: str) -> Profile:
    """py-spy's raw (collapsed) output: `frame;frame;...;leaf count` per line."""
    profile = Profile()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        # --subprocesses puts a `process <pid>:"<command line>"` frame at the root.
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames or not count.isdigit():
            continue
        if _function(frames[-1]) in WAITING:
            profile.waiting += int(count)
            continue
        profile.samples += int(count)
        profile.by_package[package_of(frames[-1])] += int(count)
        for name in {_function(frame) for frame in frames}:
            profile.inclusive[name] += int(count)
    return profile


def lines(profile: Profile) -> list[str]:
    """The results-file lines of one profile: self time by package, top inclusive functions."""
    packages = ", ".join(f"{name} {share:.0%}" for name, share in profile.top_packages(8))
    functions = [
        (name, share)
        for name, share in profile.top_functions(200)
        if package_of(name) not in GENERIC
        and not name.split(" (")[0].endswith("__call__")
        and not name.startswith(ENTRY)
    ][:14]
    return [
        f"busy samples {profile.samples:,} (plus {profile.waiting:,} of threads waiting); "
        f"self time by package: {packages}",
        "",
        "| function (inclusive) | share of busy samples |",
        "| --- | ---: |",
        *(f"| `{name}` | {share:.0%} |" for name, share in functions),
    ]


def point(
    server: Any, bodies: Sequence[driver.Body], concurrency: int, items: int, work: Path
) -> list[str]:
    """py-spy samples `server` (a `harness.Server`) for 6 s of a 6.5 s load run."""
    local = Path(sys.executable).parent / "py-spy"
    if (executable := str(local) if local.exists() else shutil.which("py-spy")) is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    out = work / f"profile-{server.port}-{concurrency}-{items}.txt"
    command = [executable, "record", "--pid", str(server.pids()[0]), "--duration", "6"]
    command += ["--rate", "250", "--nonblocking", "--subprocesses", "--format", "raw"]
    sampler = subprocess.Popen(
        [*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    driver.run(server.url, bodies, concurrency, 6.5, work, items)
    sampler.wait(timeout=70)
    return lines(summarize(out.read_text() if out.exists() else ""))
