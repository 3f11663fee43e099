"""Settings: env prefix, plain HOST/PORT, fail-fast validators, per-model batching."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_settings_read_mldm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLDM_MAX_ITEMS_PER_REQUEST", "7")
    monkeypatch.setenv("MLDM_CORS_ORIGINS", '["https://example.org"]')
    settings = Settings()
    assert settings.max_items_per_request == 7
    assert settings.cors_origins == ["https://example.org"]


def test_settings_read_the_old_name_of_max_items_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MLDM_MAX_BATCH_SIZE, deprecated: deployments that set it keep their limit.
    monkeypatch.setenv("MLDM_MAX_BATCH_SIZE", "9")
    assert Settings().max_items_per_request == 9
    assert Settings(max_batch_size=11).max_items_per_request == 11  # type: ignore[call-arg]


def test_settings_honour_plain_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLDM_HOST", raising=False)
    monkeypatch.delenv("MLDM_PORT", raising=False)
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9123")
    settings = Settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 9123)


def test_settings_prefer_mldm_port_over_plain_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("MLDM_PORT", "9124")
    assert Settings().port == 9124


def test_settings_default_to_loopback_without_cors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "MLDM_HOST", "MLDM_CORS_ORIGINS", "MLDM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.cors_origins == []
    assert settings.api_key is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_items_per_request": 0}, "max_items_per_request"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"port": 70000}, "port"),
        ({"api_key": "short"}, "at least 16 characters"),
        ({"cors_origins": ["example.org"]}, "must start with http"),
        ({"cors_origins": ["*"], "api_key": "x" * 20}, "expose the key"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"max_read_digits": 0}, "max_read_digits"),
    ],
)
def test_settings_reject_unsafe_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]


def test_batching_for_applies_per_model_override() -> None:
    settings = Settings.model_validate(
        {
            "batch_max_size": 32,
            "batch_max_wait_ms": 2.0,
            "batching": {"digit_classifier": {"max_batch_size": 8, "enabled": False}},
        }
    )
    assert settings.batching_for("digit_classifier") == (False, 8, 0.002)
    assert settings.batching_for("energy_from_density") == (True, 32, 0.002)
