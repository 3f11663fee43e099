"""Faults: broken or missing models, model versions dropped in while serving, slow inference.

Each test builds its own copy of the tiny model tree and an app whose lifespan loads it (as the
real server does), so a fault never leaks into the session's shared registry.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import TINY_CODE_LENGTH
from tests.service.helpers import assert_error, images, potentials

KEY = "reload-key-0123456789"


@asynccontextmanager
async def serve(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that loads its own model dir in its lifespan (no shared registry)."""
    settings = Settings(**{"warmup": False, "api_key": KEY, **overrides})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"X-API-Key": KEY}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as client:
            yield client


def _copy(tiny_model_dir: Path, root: Path, without: tuple[str, ...] = ()) -> Path:
    """The tiny models under `root`, minus `without` (`name` or `name/version` folders)."""
    shutil.copytree(tiny_model_dir, root)
    for part in without:
        shutil.rmtree(root / part)
    return root


def _drop_in(source: Path, target: Path) -> None:
    """Copy a version folder next to its siblings atomically: copy to a dot-folder, rename."""
    staging = target.parent / f".{target.name}.tmp"
    shutil.copytree(source, staging)
    staging.rename(target)


async def _compress(client: httpx.AsyncClient, batch: np.ndarray) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/digits/compress", json={"images": batch.tolist(), "scale": "unit"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _decompress(client: httpx.AsyncClient, codes: list[str]) -> dict[str, Any]:
    response = await client.post("/api/v1/digits/decompress", json={"codes": codes})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# Broken and missing models -----------------------------------------------------------------------


async def test_missing_model_dir_starts_not_ready_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="service")
    async with serve(model_dir=tmp_path / "absent") as client:
        assert (await client.get("/v2/health/live")).status_code == 200
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json()["error"].startswith("models not ready: digit_classifier, ")
        response = await client.post(
            "/api/v1/energy/from-potential", json={"potentials": potentials(1).tolist()}
        )
        assert_error(
            response,
            503,
            "model 'energy_from_potential' is not available: "
            "no directory energy_from_potential/ in the model directory",
        )
    assert (
        "model 'digit_classifier' is not available: no directory digit_classifier/ "
        "in the model directory"
    ) in caplog.messages


async def test_corrupt_variables_disable_only_that_version(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "models")
    for data in (root / "digit_decoder" / "2" / "variables").glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[:3])  # truncated: the SavedModel graph still parses
    caplog.set_level(logging.ERROR, logger="service")
    async with serve(model_dir=root) as client:
        # Decoder version 1 still serves, so the model (and the server) is ready.
        assert (await client.get("/v2/health/ready")).status_code == 200
        status = (await client.get("/v1/models/digit_decoder")).json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE"), ("2", "END")]
        broken = await client.get("/v2/models/digit_decoder/versions/2/ready")
        assert broken.status_code == 503 and broken.json()["ready"] is False
        # Compression falls back to the newest encoder whose decoder loaded: version 1.
        compressed = await _compress(client, images(2))
        assert compressed["model"] == {"name": "digit_encoder", "version": 1}
        # A code of the broken version is refused with 503 naming it, not decoded wrongly.
        code = base64.b64encode(b"\x01\x00\x02" + bytes(TINY_CODE_LENGTH[2])).decode()
        response = await client.post("/api/v1/digits/decompress", json={"codes": [code]})
        assert_error(response, 503, "codes[0]: decoder version 2 failed to load:")
        assert "/tmp" not in response.text and str(root) not in response.text
    logged = [m for m in caplog.messages if m.startswith("model digit_decoder version 2 failed")]
    assert logged, caplog.messages


async def test_empty_version_folder_and_bad_model_card_leave_others_serving(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "models")
    (root / "energy_from_potential" / "7").mkdir()  # an upload that never happened
    (root / "digit_classifier" / "1" / "metrics.json").write_text("{not json")
    async with serve(model_dir=root) as client:
        energy = await client.post(
            "/api/v1/energy/from-potential", json={"potentials": potentials(1).tolist()}
        )
        assert energy.json()["model"] == {"name": "energy_from_potential", "version": 1}
        failed = await client.get("/v1/models/energy_from_potential/versions/7")
        [status] = failed.json()["model_version_status"]
        assert status["state"] == "END"
        assert (
            "no saved_model.pb in <model_dir>/energy_from_potential/7"
            in (status["status"]["error_message"])
        )
        classify = await client.post(
            "/api/v1/digits/classify", json={"images": images(1).tolist(), "scale": "unit"}
        )
        assert classify.status_code == 200, classify.text
        card = (await client.get("/v1/models/digit_classifier/metadata")).json()["model_card"]
        assert card["metrics"]["error"].startswith("metrics.json is unreadable:")


async def test_unexpected_folder_in_model_tree_is_ignored(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "models")
    (root / "digit_encoder" / "²").mkdir()  # passes str.isdigit(), not int()
    (root / "digit_encoder" / "0").mkdir()
    (root / "digit_encoder" / "latest").mkdir()
    (root / ".cache").mkdir()
    async with serve(model_dir=root) as client:
        assert (await client.get("/v2/health/ready")).status_code == 200
        listing = (await client.get("/api/v1/models")).json()["models"]
        encoder = next(m for m in listing if m["name"] == "digit_encoder")
        assert (encoder["versions"], encoder["failed_versions"]) == ([1, 2], {})
        assert ".cache" not in [m["name"] for m in listing]


# New versions while serving -----------------------------------------------------------------------


async def test_reload_adds_new_version_without_failing_requests_in_flight(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "models", ("digit_encoder/2", "digit_decoder/2"))
    batch = images(3, seed=5)
    async with serve(model_dir=root) as client:
        old = await _compress(client, batch)
        assert (old["model"]["version"], old["bytes_per_image"]) == (1, 3 + TINY_CODE_LENGTH[1])
        old_images = (await _decompress(client, old["codes"]))["images"]

        stop = asyncio.Event()

        async def traffic() -> list[tuple[str, int]]:
            seen = []
            while not stop.is_set():
                compress, decompress, tfserving = await asyncio.gather(
                    client.post(
                        "/api/v1/digits/compress",
                        json={"images": batch.tolist(), "scale": "unit"},
                    ),
                    client.post("/api/v1/digits/decompress", json={"codes": old["codes"]}),
                    # A bare latent (no header) to the latest decoder: fits version 1 only.
                    client.post(
                        "/v1/models/digit_decoder:predict",
                        json={"instances": [{"b64": old["codes"][0][4:]}]},
                    ),
                )
                seen += [
                    ("compress", compress.status_code),
                    ("decompress", decompress.status_code),
                    ("tfserving", tfserving.status_code),
                ]
            return seen

        runner = asyncio.create_task(traffic())
        for name in ("digit_encoder", "digit_decoder"):
            _drop_in(tiny_model_dir / name / "2", root / name / "2")
        reload = await client.post("/admin/reload")
        stop.set()
        seen = await runner

        assert reload.status_code == 200, reload.text
        changes = {m["name"]: m for m in reload.json()["models"]}
        assert changes["digit_encoder"]["loaded"] == [2]
        assert changes["digit_decoder"]["versions"] == [1, 2]
        assert changes["digit_classifier"]["loaded"] == []
        assert seen, "no request ran during the reload"
        assert all(status == 200 for kind, status in seen if kind != "tfserving"), seen
        # Once version 2 (a longer latent) is the latest, the bare v1 latent is a 400 (TF
        # Serving's INVALID_ARGUMENT): a client error, never a 5xx or a dropped request.
        assert {status for kind, status in seen if kind == "tfserving"} <= {200, 400}, seen

        new = await _compress(client, batch)
        assert (new["model"]["version"], new["bytes_per_image"]) == (2, 3 + TINY_CODE_LENGTH[2])
        # Codes of the old encoder version still decode with the old decoder version, unchanged.
        again = await _decompress(client, old["codes"])
        assert again["versions"] == [1, 1, 1]
        assert again["images"] == old_images
        mixed = await _decompress(client, [old["codes"][0], new["codes"][0]])
        assert mixed["versions"] == [1, 2]


async def test_reload_retries_a_version_whose_copy_was_incomplete(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "models", ("digit_encoder/2",))
    target = root / "digit_encoder" / "2"
    target.mkdir()
    shutil.copy(tiny_model_dir / "digit_encoder" / "2" / "saved_model.pb", target)
    async with serve(model_dir=root) as client:
        first = (await client.post("/admin/reload")).json()
        encoder = next(m for m in first["models"] if m["name"] == "digit_encoder")
        assert encoder["loaded"] == [] and "2" in encoder["failed_versions"]
        assert (await _compress(client, images(1)))["model"]["version"] == 1

        shutil.rmtree(target)
        _drop_in(tiny_model_dir / "digit_encoder" / "2", target)
        second = (await client.post("/admin/reload")).json()
        encoder = next(m for m in second["models"] if m["name"] == "digit_encoder")
        assert (encoder["loaded"], encoder["failed_versions"]) == ([2], {})
        assert (await _compress(client, images(1)))["model"]["version"] == 2


async def test_polling_picks_up_new_version(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = _copy(tiny_model_dir, tmp_path / "models")
    async with serve(model_dir=root, reload_interval_s=0.1) as client:
        _drop_in(
            tiny_model_dir / "energy_from_potential" / "1", root / "energy_from_potential" / "5"
        )
        versions: list[str] = []
        for _ in range(600):  # up to a minute on a busy machine; normally a few polls
            status = (await client.get("/v1/models/energy_from_potential")).json()
            versions = [s["version"] for s in status["model_version_status"]]
            if "5" in versions:
                break
            await asyncio.sleep(0.1)
        assert versions == ["1", "5"]
        energy = await client.post(
            "/api/v1/energy/from-potential", json={"potentials": potentials(1).tolist()}
        )
        assert energy.json()["model"] == {"name": "energy_from_potential", "version": 5}


async def test_admin_reload_needs_the_api_key(tiny_model_dir: Path) -> None:
    async with serve(model_dir=tiny_model_dir) as client:
        missing = await client.post("/admin/reload", headers={"X-API-Key": ""})
        assert_error(missing, 401, "missing or wrong API key", field="X-API-Key")
        wrong = await client.post("/admin/reload", headers={"X-API-Key": KEY[:-1] + "x"})
        assert_error(wrong, 401, "missing or wrong API key")
    async with serve(model_dir=tiny_model_dir, api_key=None) as client:
        disabled = await client.post("/admin/reload")
        assert_error(disabled, 403, "the admin API is disabled: set MLDM_API_KEY to enable it")


# Slow inference -----------------------------------------------------------------------------------


async def test_request_over_time_limit_gets_504(tiny_model_dir: Path) -> None:
    async with serve(model_dir=tiny_model_dir, request_timeout_s=1e-6) as client:
        response = await client.post(
            "/api/v1/energy/exact", json={"potentials": potentials(512).tolist()}
        )
        assert_error(response, 504, "the exact solver did not answer within 1e-06 s")
        assert (await client.get("/v2/health/live")).status_code == 200
