"""bench.profile: py-spy's collapsed stacks summarised by package and by function."""

from __future__ import annotations

import pytest

from bench.profile import package_of, summarize

ROOT = 'process 12:"python -m service"'
HTTP = "run (uvicorn/main.py:10);H11Protocol.data_received (uvicorn/protocols/http/h11_impl.py:176)"
THREAD = "Thread._bootstrap (threading.py:1002)"
STACKS = "\n".join(
    [
        f"{ROOT};{HTTP};Connection.next_event (h11/_connection.py:440) 6",
        f"{ROOT};run (uvicorn/main.py:10);solve_dependencies (fastapi/dependencies/utils.py:600);"
        "Queue.put (queue.py:150) 3",
        f"{ROOT};{THREAD};_worker (concurrent/futures/thread.py:90);"
        "ModelVersion.predict (service/registry.py:85);"
        "quick_execute (tensorflow/python/eager/execute.py:53) 1",
        f"{ROOT};{THREAD};Condition.wait (threading.py:327) 40",
        "not a stack line",
    ]
)


def test_package_of_frames() -> None:
    assert package_of("Connection.next_event (h11/_connection.py:440)") == "h11"
    assert package_of("f (contextlib.py:12)") == "contextlib"
    assert package_of("_run_code (<frozen runpy>:88)") == "<frozen runpy>"


def test_summarize_separates_waiting_and_counts_inclusive_once() -> None:
    profile = summarize(STACKS)
    assert profile.samples == 10 and profile.waiting == 40
    assert dict(profile.top_packages()) == pytest.approx(
        {"h11": 0.6, "queue": 0.3, "tensorflow": 0.1}
    )
    functions = dict(profile.top_functions(50))
    assert functions["run (uvicorn/main.py)"] == pytest.approx(0.9)
    assert functions["solve_dependencies (fastapi/dependencies/utils.py)"] == pytest.approx(0.3)
    assert not any(name.startswith("process ") for name in functions)
