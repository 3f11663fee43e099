"""A dispatch table of the POST routes ahead of FastAPI's router: the same route, found cheaper.

FastAPI's router tries every route of every included router in turn, through its per-inclusion
route contexts, on each request: ~1/5 of the Python time of a batch-1 inference request. The
table holds the POST routes of the router in the router's own order, and answers a POST whose
path one of them matches fully by calling the very ASGI app the router would call for that route
(the route context's app: FastAPI's `request_response` over the route's handler), after setting
the scope keys the router sets (`router`, `endpoint`, `path_params`, `route`). Everything else
goes to the router unchanged: other methods (GET, HEAD: the router's 405), paths no POST route
matches (404, trailing-slash redirects), and any path that a POST route the table cannot
reproduce (a mount, a plain Starlette route) could take first: the table stops at the first
such route, so whatever it answers, the router would have answered the same way.

It sits where the router sits, inside the middleware and inside Starlette's exception middleware,
so the error answers, API key checks, body limits and metrics are those of the router's path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HotRoute:
    """One POST route of the router: how to match its path and the app the router would call."""

    route: APIRoute
    app: ASGIApp
    #: The whole path of a route without parameters (a string comparison), else None.
    exact: str | None
    regex: re.Pattern[str]
    convertors: dict[str, Any]


class HotRoutes:
    """Pure ASGI: the routes of `table` answered directly, everything else by `router`."""

    def __init__(self, router: ASGIApp, table: list[HotRoute]) -> None:
        self.router = router
        self.table = table

    def match(self, path: str) -> tuple[HotRoute, dict[str, Any]] | None:
        """The first route of the table whose path matches `path` fully, with its parameters."""
        for entry in self.table:
            if entry.exact is not None:
                if path == entry.exact:
                    return entry, {}
                continue
            found = entry.regex.match(path)
            if found is not None:
                params = {k: entry.convertors[k].convert(v) for k, v in found.groupdict().items()}
                return entry, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.match(get_route_path(scope))
            if found is not None:
                entry, params = found
                scope.setdefault("router", self.router)
                scope["endpoint"] = entry.route.endpoint
                scope["path_params"] = {**scope.get("path_params", {}), **params}
                scope["route"] = entry.route
                await entry.app(scope, receive, send)
                return
        await self.router(scope, receive, send)


def _contexts(routes: Iterable[BaseRoute]) -> Iterable[Any]:
    """The router's candidates in its matching order: route contexts of included routers
    (flattened), or a bare route."""
    for route in routes:
        flatten: Callable[[], Iterable[Any]] | None = getattr(
            route, "effective_route_contexts", None
        )
        if flatten is not None:
            yield from flatten()
        else:
            yield route


def build_table(routes: Iterable[BaseRoute]) -> list[HotRoute]:
    """The POST routes of `routes` the table can answer as the router does, in the router's
    order, up to the first route it cannot reason about."""
    table: list[HotRoute] = []
    for candidate in _contexts(routes):
        original = getattr(candidate, "original_route", None)
        if original is None:  # a bare route of the app, not from an included router
            methods = getattr(candidate, "methods", None)
            if type(candidate).__name__ == "Route" and methods and "POST" not in methods:
                continue  # never a full match for a POST: it cannot take one first
            break
        if not isinstance(original, APIRoute) or candidate.app is None:
            break  # a mount or plain route inside a router: leave the rest to the router
        if "POST" not in (candidate.methods or ()):
            continue
        path_format: str = candidate.path_format
        table.append(
            HotRoute(
                route=original,
                app=candidate.app,
                exact=None if "{" in path_format else path_format,
                regex=candidate.path_regex,
                convertors=candidate.param_convertors,
            )
        )
    return table


def install(stack: ASGIApp, router: ASGIApp, routes: Iterable[BaseRoute]) -> ASGIApp:
    """Put a `HotRoutes` in place of `router` in the built middleware `stack` (the layer whose
    `app` is the router); the stack unchanged, with a warning, if no layer holds it."""
    layer: Any = stack
    seen: set[int] = set()
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        inner = getattr(layer, "app", None)
        if inner is router:
            layer.app = HotRoutes(router, build_table(routes))
            return stack
        layer = inner
    logger.warning("no layer of the middleware stack holds the router: no dispatch table")
    return stack
