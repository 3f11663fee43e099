"""The load matrix of peers: routes (server, protocol) x groups (model, concurrency), one item
per request, checked once, measured in interleaved rounds, aggregated."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import harness
from bench.harness import Server, fmt

VARIANTS = 8  # different bodies per point, cycled (the same bytes for every server)
Key = tuple[str, str, str, int]  # server, kind, model, concurrency


def model_folder(root: Path, source: Path, version: int) -> dict[str, str]:
    """A model repository holding only version `version` of the two models (symlinks)."""
    paths = {}
    for case in wire.CASES.values():
        target = source / case.model / str(version)
        if not (target / "saved_model.pb").exists():
            raise FileNotFoundError(f"no SavedModel at {target}")
        link = root / case.model / str(version)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
        paths[case.model] = str(target.resolve())
    return paths


def probe(
    server: Server, kind: str, case: wire.ModelCase, body: wire.Body, ref: dict[str, np.ndarray]
) -> str | None:
    """None if the server answers `body` right (the numbers of the first server), else why not."""
    try:
        status, headers, payload = harness.request_once(server.url, body, 300)
        got = wire.values(kind, case, payload, headers) if status == 200 else None
    except (OSError, ValueError) as exc:
        return f"no readable answer ({exc})"
    if got is None:
        return f"answered {status} (skipped): {payload[:200]!r}"
    if got.size % case.values_per_item:
        return f"expected a multiple of {case.values_per_item} values, got {got.size}"
    first = ref.setdefault(case.key, got)
    if first.size == got.size and not np.allclose(got, first, rtol=1e-4, atol=1e-5):
        return f"numbers unlike the first server's: {got[:4]} vs {first[:4]} (skipped)"
    return None


def schedule(
    routes: Sequence[tuple[str, str]], groups: Sequence[tuple[str, int]], rounds: int
) -> list[tuple[int, tuple[str, int], tuple[str, str]]]:
    """(round, group, route) for every round and group, the routes rotated at every group."""
    plan = []
    for point, (r, group) in enumerate((r, g) for r in range(rounds) for g in groups):
        shift = point % len(routes)
        plan += [(r, group, route) for route in [*routes[shift:], *routes[:shift]]]
    return plan


def run(
    servers: dict[str, Server],
    routes: Sequence[tuple[str, str]],
    groups: Sequence[tuple[str, int]],
    args: argparse.Namespace,
    report: dict[str, Any],
    work: Path,
) -> list[dict[str, Any]]:
    """Check, then measure every usable (route, group): one result per run."""
    keys = dict.fromkeys(key for key, _ in groups)
    bodies = {
        (k, kind): wire.bodies(wire.CASES[k], kind, 1, VARIANTS) for k in keys for _, kind in routes
    }
    usable: set[tuple[str, str, str]] = set()
    ref: dict[str, np.ndarray] = {}
    for name, kind in routes:
        for key in keys:
            if note := probe(servers[name], kind, wire.CASES[key], bodies[(key, kind)][0], ref):
                report["notes"].append(f"{name}, {wire.KIND_TITLES[kind]}, {key}: {note}")
                print(f"skip: {report['notes'][-1]}", flush=True)
            else:
                usable.add((name, kind, key))
    points = []
    for r, (key, c), (name, kind) in schedule(routes, groups, args.rounds):
        if (name, kind, key) not in usable:
            continue
        res = harness.measure(
            servers[name], bodies[(key, kind)], c, args.duration, args.warmup, work
        )
        res.update(server=name, kind=kind, model=wire.CASES[key].model, round=r)
        points.append(res)
        print(
            f"round {r} {key:8s} c={c:<3d} {name:26s} "
            f"{wire.KIND_TITLES[kind]:14s} {res['rps']:8.1f} req/s p50 {res['p50_ms']:8.2f} "
            f"p99 {res['p99_ms']:8.1f} ms errors {res['errors']} rss {res['rss_mib']:5.0f} MiB",
            flush=True,
        )
    return points


def spread(values: Sequence[float]) -> float:
    """(max - min) / median over rounds: the run-to-run noise of one figure."""
    finite = [v for v in values if not math.isnan(v)]
    return (max(finite) - min(finite)) / harness.median(finite) if len(finite) > 1 else math.nan


def aggregate(points: Sequence[dict[str, Any]]) -> dict[Key, dict[str, float]]:
    """Medians over rounds per (server, kind, model, concurrency); errors summed."""
    groups: dict[Key, list[dict[str, Any]]] = {}
    for p in points:
        key = (p["server"], p["kind"], p["model"], p["concurrency"])
        groups.setdefault(key, []).append(p)
    medians = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")
    return {
        key: {
            **{k: harness.median([p[k] for p in g]) for k in (*medians, "client_cpu_us_per_req")},
            "errors": float(sum(p["errors"] for p in g)),
            "requests": float(sum(p["requests"] for p in g)),
            "rss_mib": max(p["rss_mib"] for p in g),
            "rounds": float(len(g)),
            "noise": spread([p["rps"] for p in g]),
        }
        for key, g in groups.items()
    }


def table(stats: dict[Key, dict[str, float]], servers: Sequence[str] = ()) -> list[str]:
    """Every (server, route, point): the one results table of the load scenarios."""
    order = {name: i for i, name in enumerate(servers)}
    rows = sorted(
        stats.items(),
        key=lambda kv: (*kv[0][2:], order.get(kv[0][0], 99), wire.KINDS.index(kv[0][1])),
    )
    head = "model | conc.: | server | route | req/s: | p50 ms: | p99 ms: | errors: | requests: | "
    head += "client CPU us/req: | server CPU us/req: | RSS MiB: | noise:"
    cells = []
    for (server, kind, m, c), s in rows:
        noise = "-" if math.isnan(s["noise"]) else f"{s['noise']:.0%}"
        cpu = [fmt(s[f"{who}_cpu_us_per_req"], 0) for who in ("client", "server")]
        figures = [s["rps"], fmt(s["p50_ms"], 2), s["p99_ms"], int(s["errors"]), int(s["requests"])]
        figures += [*cpu, fmt(s["rss_mib"], 0), noise]
        cells.append([m, c, server, wire.KIND_TITLES[kind], *figures])
    return harness.table(head, cells)
