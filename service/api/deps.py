"""Dependencies of the routes: settings, registry and data plane from the app, and the API key.

`FastRoute`, the route class of the routers of the inference routes, resolves these same
dependencies without FastAPI's dependency solver: on a batch-1 request the solver (once per
dependency, path parameter and sub-dependency) was a quarter of the Python time of the stack.
The declared dependencies stay as they are, so the OpenAPI document (security included) does not
change, and a route whose parameters are anything else gets FastAPI's own handler.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from starlette.responses import Response

from service import errors
from service.dataplane import DataPlane
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


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    """When `api_key` is configured, the header must carry it (compared in constant time)."""
    check_api_key(settings, key)


def check_api_key(settings: Settings, key: str | None) -> None:
    """`require_api_key` as a plain call: a 401 unless the key is the configured one."""
    errors.check_api_key(
        settings.api_key, key, API_KEY_HEADER, "header", headers={"WWW-Authenticate": "ApiKey"}
    )


def _api_key_of(request: Request) -> None:
    # As `APIKeyHeader(auto_error=False)`: an empty header is no key.
    check_api_key(request.app.state.settings, request.headers.get(API_KEY_HEADER) or None)


#: The dependencies `FastRoute` resolves itself: what each gives for a request.
_DIRECT: dict[Callable[..., Any], Callable[[Request], Any]] = {
    get_settings: lambda request: request.app.state.settings,
    get_registry: lambda request: request.app.state.registry,
    get_dataplane: lambda request: request.app.state.dataplane,
    require_api_key: _api_key_of,
}


class FastRoute(APIRoute):
    """An `APIRoute` whose handler reads the app's state and checks the API key directly.

    Only for endpoints that take the `Request`, `str` path parameters and the dependencies of
    `_DIRECT`, and return a `Response` (the inference routes); any other endpoint is left to
    FastAPI's handler. Behaviour is the same: the API key is checked first (the same 401), then
    the endpoint runs with the same arguments.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        default = super().get_route_handler()
        dependant = self.dependant
        # An app-level or include-level dependency would live in FastAPI's per-inclusion
        # context, not in `self.dependant`: leave such routes to FastAPI.
        context_var = getattr(fastapi.routing, "_effective_route_context_var", None)
        context = context_var.get() if context_var is not None else None
        effective = getattr(context, "dependant", dependant)
        if len(effective.dependencies) != len(dependant.dependencies):
            return default
        if (
            dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
            or dependant.websocket_param_name
            or dependant.http_connection_param_name
            or any(p.field_info.annotation is not str for p in dependant.path_params)
            or any(d.call not in _DIRECT for d in dependant.dependencies)
        ):
            return default
        steps = [(d.name, _DIRECT[d.call]) for d in dependant.dependencies if d.call is not None]
        paths = [(p.name, p.alias) for p in dependant.path_params]
        request_name = dependant.request_param_name
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            kwargs: dict[str, Any] = {}
            for name, resolve in steps:
                value = resolve(request)
                if name is not None:
                    kwargs[name] = value
            parameters = request.path_params
            for name, alias in paths:
                kwargs[name] = parameters[alias]
            if request_name is not None:
                kwargs[request_name] = request
            response = await endpoint(**kwargs)
            if not isinstance(response, Response):
                raise TypeError(f"{endpoint.__name__} must return a Response (FastRoute)")
            return response

        return handler
