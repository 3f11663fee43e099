"""The cost of one request's counters, with one process and in multiprocess mode.

``python -m bench metrics`` times (best of 5 x 20,000) the metric calls one served request
makes: the in-flight gauge up and down, one model execution, one data-plane request and one
HTTP request (`service.metrics`), once with in-memory values and once, in a child process, with
`PROMETHEUS_MULTIPROC_DIR` set (memory-mapped files, as with `MLDM_WORKERS` > 1). The library
picks its value type when first imported, hence the child processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import timeit

from bench.harness import REPO

CALLS = 20_000


def per_request_us() -> float:
    from service.metrics import InferenceStats, Metrics

    stats = InferenceStats()
    metrics = Metrics(stats=stats)
    model, route = "energy_from_potential", "/api/v1/energy/from-potential"

    def one() -> None:
        metrics.in_flight.inc()
        stats.record_execution(model, 1, 1, 0.0001, 0.001)
        stats.record_request(model, 1, 1, 0.002, ok=True)
        metrics.in_flight.dec()
        metrics.observe_request("POST", route, model, 200, 0.003)

    return min(timeit.repeat(one, number=CALLS, repeat=5)) / CALLS * 1e6


def main(argv: list[str]) -> int:
    if argv == ["--child"]:
        print(f"{per_request_us():.2f}")
        return 0
    command = [sys.executable, "-m", "bench", "metrics", "--child"]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    single = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory() as path:
        multi = subprocess.run(
            command,
            cwd=REPO,
            env={**env, "PROMETHEUS_MULTIPROC_DIR": path},
            capture_output=True,
            text=True,
            check=True,
        )
    print(f"counters of one request, one process:  {single.stdout.split()[-1]} us")
    print(f"counters of one request, multiprocess: {multi.stdout.split()[-1]} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
