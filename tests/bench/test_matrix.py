"""The load matrix's pure parts: model folder, schedule, aggregation, noise, the results table,
and the answer check against a tiny HTTP server that answers what it is told to."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import bodies as wire
from bench import harness, matrix
from bench.harness import REPO


def test_model_folder_holds_only_the_chosen_version(tmp_path: Path) -> None:
    paths = matrix.model_folder(tmp_path, REPO / "models", 1)
    assert sorted(paths) == ["digit_classifier", "energy_from_potential"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(paths)
    assert (tmp_path / "digit_classifier" / "1" / "saved_model.pb").exists()
    with pytest.raises(FileNotFoundError):
        matrix.model_folder(tmp_path / "other", REPO / "models", 99)


def test_schedule_rotates_routes_at_every_point() -> None:
    routes = [("ours", "v2"), ("ours", "task"), ("mlserver", "v2"), ("kserve", "v2-binary")]
    groups = [(key, c) for key in ("classify", "energy") for c in (1, 8)]
    plan = matrix.schedule(routes, groups, rounds=2)
    assert len(plan) == 2 * len(groups) * len(routes)
    firsts = [plan[i * len(routes)][2] for i in range(4)]
    assert len(set(firsts)) == 4  # a different route opens each point
    point = plan[: len(routes)]
    assert {route for _, _, route in point} == set(routes)
    assert {group for _, group, _ in point} == {groups[0]}
    assert [r for r, _, _ in plan[-len(routes) :]] == [1] * len(routes)


def _point(rps: float, r: int, errors: int = 0) -> dict[str, Any]:
    return {
        "server": "ours",
        "kind": "v2",
        "model": "m",
        "concurrency": 1,
        "round": r,
        "rps": rps,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": errors,
        "requests": 100,
        "server_cpu_us_per_req": 900.0,
        "client_cpu_us_per_req": 30.0,
        "rss_mib": 600.0 + r,
    }


def test_aggregate_takes_medians_over_rounds() -> None:
    stats = matrix.aggregate([_point(100, 0), _point(300, 1, errors=2), _point(200, 2)])
    s = stats[("ours", "v2", "m", 1)]
    assert (s["rps"], s["rounds"], s["errors"], s["requests"]) == (200, 3, 2, 300)
    assert s["rss_mib"] == 602.0
    assert s["noise"] == pytest.approx(1.0)  # (300 - 100) / 200


def test_spread_is_range_over_median() -> None:
    assert matrix.spread([90.0, 100.0, 110.0]) == pytest.approx(0.2)
    assert math.isnan(matrix.spread([100.0]))
    assert math.isnan(matrix.spread([math.nan, 5.0]))


def test_table_orders_by_model_point_server_and_route() -> None:
    stats = matrix.aggregate(
        [{**_point(10, 0), "server": "naive"}, _point(20, 0), {**_point(5, 0), "kind": "task"}]
    )
    lines = matrix.table(stats, ["ours", "naive"])
    assert lines[0].startswith("| model | conc. | server | route | req/s |")
    assert lines[1].startswith("| --- | ---: | --- | --- | ---: |")
    assert [line.split(" | ")[2:4] for line in lines[2:]] == [
        ["ours", "V2 JSON"],
        ["ours", "task JSON"],
        ["naive", "V2 JSON"],
    ]


class _Answers(BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[harness.Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield harness.Server("fake", [], {}, httpd.server_address[1], tmp_path / "log")
    httpd.shutdown()


def _says(energies: list[float], status: int = 200) -> None:
    _Answers.answer = (status, json.dumps({"energies": energies}).encode())


def test_probe_compares_numbers_across_servers(server: harness.Server) -> None:
    body, ref = wire.task_json(wire.ENERGY, wire.ENERGY.inputs(1, 0)), {}
    _says([1.5])
    assert matrix.probe(server, "task", wire.ENERGY, body, ref) is None
    assert ref["energy"].tolist() == [1.5]
    _says([1.5000001])
    assert matrix.probe(server, "task", wire.ENERGY, body, ref) is None  # within tolerance
    _says([2.5])
    assert "unlike the first server's" in (
        matrix.probe(server, "task", wire.ENERGY, body, ref) or ""
    )
    _says([1.5], status=422)
    assert "answered 422" in (matrix.probe(server, "task", wire.ENERGY, body, ref) or "")
    _Answers.answer = (200, b"not json")
    assert "no readable answer" in (matrix.probe(server, "task", wire.ENERGY, body, ref) or "")
    assert np.array_equal(ref["energy"], [1.5])
