"""Dependencies of the routes: settings, registry and service from the app, and the API key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from service.dataplane import DataPlane
from service.errors import Unauthorized
from service.inference import InferenceService
from service.registry import ModelRegistry
from service.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.service.dataplane
    return dataplane


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    """When `api_key` is configured, the header must carry it (compared in constant time)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if key is None or not hmac.compare_digest(key.encode(), expected):
        raise Unauthorized(
            f"missing or wrong API key in the {API_KEY_HEADER} header",
            field=API_KEY_HEADER,
            expected="the configured API key",
            received="no key" if key is None else "a wrong key",
            headers={"WWW-Authenticate": "ApiKey"},
        )
