"""Picks up model versions dropped into the model directory while the server runs.

Two ways in, one code path: a polling task (every `reload_interval_s` seconds; off when 0) and
`POST /admin/reload`. Both call `Reloader.reload`, which runs the registry's incremental load in a
thread, one reload at a time. Versions already loaded stay exactly as they are, so a request in
flight keeps the model object it started with, and a code made by an older encoder version is
still decoded by the decoder of that version; a new version folder is loaded next to them and
serves new requests as the latest once it is ready. A version that fails to load is recorded and
never disturbs the others.

Polling first compares a cheap fingerprint of the tree (names, sizes and mtimes of the files that
make a SavedModel), so an idle server pays a few `stat` calls per interval, and a version that
failed is tried again only when its files change (a copy still in progress, then complete).
Dropping a version in atomically (copy to `models/<name>/.3.tmp`, then rename to `3`) avoids
even that one failed attempt: folders whose name is not a positive integer are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from service.batching import cancel_and_wait
from service.registry import ModelRegistry

logger = logging.getLogger(__name__)

Fingerprint = frozenset[tuple[str, int, int]]


def _files(version_dir: Path) -> Iterator[Path]:
    yield version_dir / "saved_model.pb"
    variables = version_dir / "variables"
    if variables.is_dir():
        yield from variables.iterdir()


def fingerprint(model_dir: Path) -> Fingerprint:
    """(relative path, size, mtime in ns) of every SavedModel file under `model_dir`."""
    entries: set[tuple[str, int, int]] = set()
    if not model_dir.is_dir():
        return frozenset()
    for model in model_dir.iterdir():
        if not model.is_dir() or model.name.startswith("."):
            continue
        entries.add((model.name, 0, 0))
        for version in model.iterdir():
            if not (version.is_dir() and version.name.isascii() and version.name.isdigit()):
                continue
            entries.add((f"{model.name}/{version.name}", 0, 0))
            for path in _files(version):
                with contextlib.suppress(OSError):  # a file removed mid-scan: next poll sees it
                    stat = path.stat()
                    entries.add((str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns))
    return frozenset(entries)


@dataclass
class ModelChange:
    """What one reload did to one model."""

    name: str
    versions: list[int]
    loaded: list[int]
    failed_versions: dict[str, str] = field(default_factory=dict)


@dataclass
class ReloadReport:
    """What one reload did: every model's versions after it, and the ones it added."""

    models: list[ModelChange]

    @property
    def loaded(self) -> dict[str, list[int]]:
        return {m.name: m.loaded for m in self.models if m.loaded}


class Reloader:
    """One per app: serialises reloads and runs the polling task while the app lives."""

    def __init__(self, registry: ModelRegistry, interval_s: float, warm_up: bool) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.warm_up = warm_up
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._seen: Fingerprint | None = None
        #: Called after each reload (the metrics of several workers write the new model states).
        self.on_reload: list[Callable[[], None]] = []

    async def reload(self) -> ReloadReport:
        """Load every version that is new on disk (and retry failed ones); keep loaded ones."""
        async with self._lock:
            before = {e.name: set(e.versions) for e in self.registry.entries()}
            seen = await asyncio.to_thread(fingerprint, self.registry.model_dir)
            await asyncio.to_thread(self.registry.load, self.warm_up)
            self._seen = seen
            report = ReloadReport(
                [
                    ModelChange(
                        name=entry.name,
                        versions=sorted(entry.versions),
                        loaded=sorted(set(entry.versions) - before.get(entry.name, set())),
                        failed_versions={str(v): e for v, e in sorted(entry.failed.items())},
                    )
                    for entry in self.registry.entries()
                ]
            )
        if report.loaded:
            # As at start-up (service.app): keep the new model's objects out of full collections.
            gc.freeze()
        for name, versions in report.loaded.items():
            logger.info("reload: model %s now serves new versions %s", name, versions)
        for change in report.models:
            for version, error in change.failed_versions.items():
                logger.error("reload: model %s version %s failed: %s", change.name, version, error)
        for listener in self.on_reload:
            listener()
        return report

    async def poll_once(self) -> ReloadReport | None:
        """Reload if the tree changed since the last reload; None when it did not."""
        current = await asyncio.to_thread(fingerprint, self.registry.model_dir)
        if current == self._seen:
            return None
        return await self.reload()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll_once()
            except Exception:  # a bad tree must never stop polling (or the server)
                logger.exception("reload: polling %s failed", self.registry.model_dir)

    def start(self) -> None:
        """Start polling (when an interval is set); call after the first load."""
        if self.interval_s > 0 and self._task is None:
            self._seen = fingerprint(self.registry.model_dir)
            self._task = asyncio.create_task(self._poll(), name="model-dir-poll")
            logger.info(
                "polling %s for new model versions every %g s",
                os.fspath(self.registry.model_dir),
                self.interval_s,
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
