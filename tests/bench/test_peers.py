"""The peers benchmark's pure parts: venv cache, peer set-ups, schedule, aggregation, table.

No server is started and no virtualenv is built here; `python -m bench peers` is the benchmark.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import harness, matrix, peers


def test_pins_come_from_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==2.0\ntensorflow_cpu==9.9.1 \\\n    --hash=sha256:x\n")
    assert peers.pinned("tensorflow-cpu", lock) == "tensorflow-cpu==9.9.1"
    assert peers.pinned("onnxruntime").startswith("onnxruntime==")  # the real lock
    lock.write_text("numpy==2.0\n")
    with pytest.raises(RuntimeError, match="no tensorflow-cpu pin"):
        peers.pinned("tensorflow-cpu", lock)


def test_venv_ready_only_with_the_exact_marker(tmp_path: Path) -> None:
    assert not peers.venv_ready("kserve", tmp_path)
    folder = tmp_path / "kserve"
    folder.mkdir()
    (folder / ".mldm-spec").write_text("kserve==0.1\ntensorflow-cpu==1\n")
    assert not peers.venv_ready("kserve", tmp_path)  # built for other versions: rebuilt
    (folder / ".mldm-spec").write_text("\n".join(peers.venv_requirements("kserve")) + "\n")
    assert peers.venv_ready("kserve", tmp_path)


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLDM_BENCH_CACHE", str(tmp_path))
    assert peers.cache_dir() == tmp_path / "peers"


def test_mlserver_setup_is_loopback_with_its_tuning(tmp_path: Path) -> None:
    config = peers.FULL_PEERS[3]  # 0 workers, adaptive batching 64 / 2 ms
    server = peers.mlserver_server(config, tmp_path / "venv", {"m": "/models/m/1"}, tmp_path)
    folder = Path(server.command[-1])
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["host"] == "127.0.0.1" and settings["http_port"] == server.port
    assert settings["parallel_workers"] == 0 and settings["debug"] is False
    model = json.loads((folder / "m" / "model-settings.json").read_text())
    assert model["implementation"] == "mlserver_runtime.SignatureModel"
    assert (model["max_batch_size"], model["max_batch_time"]) == (64, 0.002)
    assert model["parameters"]["uri"] == "/models/m/1"
    assert server.env["PYTHONPATH"] == str(peers.RUNTIMES)


def test_kserve_and_bentoml_setups_pass_models_and_knobs(tmp_path: Path) -> None:
    kserve = peers.kserve_server(peers.FULL_PEERS[5], tmp_path, {"m": "/p"}, tmp_path)
    assert kserve.command[kserve.command.index("--enable_latency_logging") + 1] == "false"
    assert json.loads(kserve.env["MLDM_PEER_MODELS"]) == {"m": "/p"}
    bento = peers.bentoml_server(peers.FULL_PEERS[7], tmp_path, {"m": "/p"}, tmp_path)
    assert bento.command[bento.command.index("--host") + 1] == "127.0.0.1"
    assert bento.env["MLDM_PEER_BATCHING"] == "on"
    assert bento.env["PYTHONPATH"] == str(peers.RUNTIMES)  # the runtimes only, not our packages


def test_quick_preset_fits_in_thirteen_minutes(capsys: pytest.CaptureFixture[str]) -> None:
    configs = peers.configurations(True, sorted(peers.PEERS))
    routes = peers.driven(configs, quick=True)
    groups = [(key, 1, c) for key in peers.MODEL_KEYS for c in (1, 8, 64)]
    plan = matrix.schedule(routes, groups, 1)
    assert peers.estimate_s(len(plan), len(configs), 5.0, 1.0) <= 13 * 60
    assert peers.main(["--quick", "--plan"]) == 0  # the preset as the command line gives it
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{len(plan)} runs on {len(configs)} servers, 1 round(s)")


def _point(server: str, kind: str, c: int, rps: float, p99: float, r: int = 0) -> dict[str, Any]:
    return {
        "server": server,
        "kind": kind,
        "model": "digit_classifier",
        "concurrency": c,
        "round": r,
        "client_cpu_us_per_req": 30.0,
        "rps": rps,
        "p50_ms": p99 / 3,
        "p99_ms": p99,
        "errors": 0,
        "requests": 100,
        "server_cpu_us_per_req": 900.0,
        "rss_mib": 700.0,
    }


def test_best_peer_ignores_ours_and_failing_configs() -> None:
    points = [
        _point("ours", "v2", 8, 900, 5),
        _point("mlserver (a)", "v2", 8, 400, 20),
        _point("kserve (b)", "v2", 8, 500, 30),
        _point("bentoml (c)", "v2", 8, 800, 9),
    ]
    points[3]["errors"] = 4
    stats = matrix.aggregate(points)
    name, best = peers.best_peer(stats, "digit_classifier", 8)  # type: ignore[misc]
    assert name == "kserve (b)" and best["rps"] == 500
    assert peers.best_peer(stats, "digit_classifier", 64) is None


def _report(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "peers",
        "date": "2026-12-01 22:00 UTC",
        "commit": "abc1234",
        "dirty": False,
        "quick": True,
        "command": "python -m bench peers --quick",
        "machine": {
            "cores": 2,
            "cpu": "x",
            "memory_gib": 8,
            "python": "3.11",
            "tensorflow": "2",
            "load_before": [0.1],
        },
        "client": "wrk",
        "duration_s": 5.0,
        "warmup_s": 1.0,
        "rounds": 1,
        "concurrencies": [1, 8],
        "servers": ["ours", "mlserver (a)"],
        "contended": "",
        "floors": ["bare loopback round trip: p50 0.5 ms"],
        "single_item_floor_ms": {"classify": 2.0},
        "memory": {
            "ours": {"rss": 700.0, "pss": 400.0, "processes": 1},
            "mlserver (a)": {"rss": 620.0, "pss": 500.0, "processes": 1},
        },
        "notes": ["mlserver (a), V2 binary, classify: answered 400 (skipped)"],
        "stats": matrix.aggregate(points),
        "wall_s": 600.0,
    }


def test_render_and_targets_state_ratios_and_verdicts(tmp_path: Path) -> None:
    points = [
        _point("ours", "v2", 1, 150, 8),
        _point("ours", "task", 1, 160, 8),
        _point("mlserver (a)", "v2", 1, 100, 20),
        _point("ours", "v2", 8, 300, 30),
        _point("ours", "task", 8, 330, 30),
        _point("mlserver (a)", "v2", 8, 250, 40),
    ]
    report = _report(points)
    text = peers.render(report)
    assert (
        "| classify, 1 | 150.0, 8.0 | 160.0, 8.0 | mlserver (a): 100.0, 20.0 | 1.50 | 1.60" in text
    )
    assert "NOT met: classify, concurrency 1, ours V2 req/s 1.50x the best Python peer's" in text
    assert "(mlserver (a); target >= 3x), p99 0.40x its p99" in text
    assert "NOT met: classify, concurrency 8, ours V2 req/s 1.20x" in text
    assert "Triton's" not in text  # no Triton in this run: no verdict against it
    # p50 of ours V2 at c=1 is 8/3 ms against a floor of 2 ms: 1.33x, within 1.5x.
    assert "met: classify single-item p50 (V2, conc. 1) 2.67 ms = 1.33x" in text
    assert "NOT met: resident memory ours 700 MiB = 1.13x the leanest Python peer" in text
    assert "answered 400 (skipped)" in text
    assert "- bare loopback round trip: p50 0.5 ms" in text
    path = harness.write(report, text, tmp_path, "-quick")
    assert path.name == "peers-quick-2026-12-01-abc1234.md"
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["stats"][0][:4] == ["ours", "v2", "digit_classifier", 1]
    assert "| digit_classifier | 1 | mlserver (a) | V2 JSON | 100.0 |" in text
    assert path.read_text() == text


def test_ratio_without_a_figure_is_nan() -> None:
    assert math.isnan(harness.ratio(1.0, 0.0)) and math.isnan(harness.ratio(math.nan, 2.0))
    assert harness.ratio(3.0, 2.0) == 1.5


def test_ours_alone_renders_every_route_without_ratios() -> None:
    def ours(kind: str, rps: float, p50: float, model: str = "e") -> dict:
        point = _point("ours", kind, 1, rps, p50 * 3)
        name = {"e": "energy_from_potential", "c": "digit_classifier"}[model]
        return {**point, "model": name, "p50_ms": p50}

    points = [
        ours("task", 500.0, 2.0),
        {**ours("task", 520.0, 2.0), "round": 1},
        ours("v2", 450.0, 2.3),
        ours("v2", 200.0, 5.0, model="c"),
    ]
    report = {**_report(points), "memory": {}}
    report["servers"], report["concurrencies"] = ["ours"], [1]
    text = peers.render(report)
    row = "| energy_from_potential | 1 | ours | task JSON | 510.0 | 2.00 | 6.0 | 0 |"
    assert row in text
    assert "| 4% |" in text  # (520 - 500) / 510 between the rounds
    assert "No peer answered in this run: no ratios." in text
    assert "NOT met: classify single-item p50 (V2, conc. 1) 5.00 ms = 2.50x" in text
