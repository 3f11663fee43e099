"""The harness's argument base, results writer, table, model names and layering (no server)."""

from __future__ import annotations

import ast
import json
import math
import os
import signal
from pathlib import Path

import pytest

from bench import harness
from tests.bench import canned

BENCH = harness.REPO / "bench"


def test_bench_never_imports_tests() -> None:
    for path in BENCH.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "tests" or n.startswith("tests.") for n in names), path


def test_model_names_come_from_the_service() -> None:
    from service.tasks import model_names

    assert harness.models() == tuple(model_names())


def test_quick_presets_and_explicit_values() -> None:
    p = harness.parser("x", "doc", duration=(5, 10), rounds=(1, 3), concurrency=(1, 64))
    full, quick = harness.parse(p, []), harness.parse(p, ["--quick", "--rounds", "2"])
    assert (full.duration, full.rounds, full.concurrency) == (10, 3, [1, 64])
    assert (quick.duration, quick.rounds, quick.argv) == (5, 2, ["--quick", "--rounds", "2"])
    assert not hasattr(harness.parse(harness.parser("y", None), []), "duration")


def test_table_aligns_and_formats() -> None:
    lines = harness.table("name | req/s: | p50 ms:", [["a", 1234.5, "1.25"], ["b", math.nan, 7]])
    assert lines == [
        "| name | req/s | p50 ms |",
        "| --- | ---: | ---: |",
        "| a | 1,234 | 1.25 |",
        "| b | - | 7 |",
    ]


def test_latest_version_takes_the_highest_with_a_saved_model(tmp_path: Path) -> None:
    for version in ("1", "10", "2", "x"):
        (tmp_path / "m" / version).mkdir(parents=True)
        (tmp_path / "m" / version / "saved_model.pb").touch()
    (tmp_path / "m" / "11").mkdir()  # no SavedModel in it
    assert harness.latest_version(tmp_path, "m") == tmp_path / "m" / "10"
    assert harness.latest_version(tmp_path, "absent") is None


def test_write_names_the_file_and_keeps_tuple_keyed_stats(tmp_path: Path) -> None:
    report = harness.new_report("demo", ["--quick"], stats={("ours", "v2", 1): {"rps": 2.0}})
    assert report["command"] == "python -m bench demo --quick"
    text = harness.document(report, "Demo", ["a line"])
    path = harness.write(report, text, tmp_path, "-quick")
    assert path.name == f"demo-quick-{report['date'][:10]}-{report['commit']}.md"
    assert path.read_text().startswith(f"# Demo, {report['date']}, commit {report['commit']}")
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["stats"] == [["ours", "v2", 1, {"rps": 2.0}]]
    assert saved["machine"]["cores"] >= 1


def test_running_stops_the_server_it_started(tmp_path: Path) -> None:
    server, before = canned.server(tmp_path), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), harness.running(server, 30):
        assert harness.request_once(server.url, harness.driver.Body("GET", "/"))[0] == 200
        assert server.pids() and server.memory_mib()[0] > 0
        os.kill(os.getpid(), signal.SIGTERM)  # as a kill of the benchmark would
    assert server.process is not None and server.process.poll() is not None
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    server = harness.python_server("broken", "tests.bench.canned", ["--no-such-option"], tmp_path)
    with pytest.raises(RuntimeError, match="broken exited with 2"):
        server.start(timeout_s=30)
