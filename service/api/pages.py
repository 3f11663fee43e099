"""Pages for people: the API documentation and the demo page, served with no network at all.

`/docs` (Swagger UI) and `/redoc` (ReDoc) load their JavaScript and CSS from the app itself: the
files ship in the pinned `fastapi-offline` wheel (Swagger UI 5.32.6, ReDoc 2.5.3, MIT licences),
so the documentation works on a machine without internet. The demo page (`/demo/`, `/`
redirects there) is plain static files under `service/static/demo/`; every number it shows comes
from the API. The plots that the training export writes next to each model version are served
from the registry, so the demo's model view can show them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from service.api.deps import RegistryDep, require_api_key
from service.api.responses import JSONBody
from service.errors import NotFound
from service.registry import parse_version

DOCS_ASSETS = Path(str(files("fastapi_offline") / "static"))
DEMO_DIR = Path(__file__).resolve().parent.parent / "static" / "demo"
ASSETS_URL = "/static/docs"

#: ReDoc 2.5.3 draws its sidebar footer logo from this URL, with no option to turn it off.
REDOC_LOGO_URL = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


class DocPage(NamedTuple):
    """One documentation page: FastAPI's builder, the title's suffix, the packaged file of each
    asset keyword of the builder, and its other options."""

    build: Callable[..., HTMLResponse]
    name: str
    assets: dict[str, str]
    options: dict[str, Any]


DOC_PAGES = {
    "/docs": DocPage(
        get_swagger_ui_html,
        "Swagger UI",
        {
            "swagger_js_url": "swagger-ui-bundle.js",
            "swagger_css_url": "swagger-ui.css",
            "swagger_favicon_url": "favicon.png",
        },
        # Swagger UI's default sends the spec to validator.swagger.io for a badge: off.
        {"swagger_ui_parameters": {"validatorUrl": None}},
    ),
    "/redoc": DocPage(
        get_redoc_html,
        "ReDoc",
        {"redoc_js_url": "redoc.standalone.js", "redoc_favicon_url": "favicon.png"},
        {"with_google_fonts": False},
    ),
}

router = APIRouter(prefix="/api/v1", tags=["models"], dependencies=[Depends(require_api_key)])


def _plots(registry: RegistryDep, name: str, version: str) -> dict[str, Path]:
    """The PNG files of one loaded model version, by file name (never a path from the client)."""
    # As on the TF Serving and V2 routes, a version that is not a positive integer is a 404.
    model = registry.get(name, parse_version(version))
    return {path.name: path for path in sorted(model.path.glob("*.png"))}


@router.get("/models/{name}/versions/{version}/plots")
async def list_plots(name: str, version: str, registry: RegistryDep) -> Response:
    """The training plots (PNG) that the export wrote next to this model version."""
    plots = _plots(registry, name, version)
    prefix = f"/api/v1/models/{name}/versions/{version}/plots"
    return JSONBody({"plots": [{"name": n, "url": f"{prefix}/{n}"} for n in plots]})


@router.get(
    "/models/{name}/versions/{version}/plots/{file}",
    responses={200: {"content": {"image/png": {}}, "description": "The PNG file"}},
)
async def get_plot(name: str, version: str, file: str, registry: RegistryDep) -> Response:
    """One training plot of a model version, as PNG."""
    plots = _plots(registry, name, version)
    if file not in plots:
        raise NotFound(
            f"model {name!r} version {version} has no plot {file!r}",
            field="file",
            expected=" | ".join(plots) or "no plots",
            received=repr(file),
        )
    return FileResponse(plots[file], media_type="image/png")


def install(app: FastAPI) -> None:
    """Add /docs, /redoc, their assets, the demo page and the plot routes to `app`.

    The app must be made with `docs_url=None, redoc_url=None` (FastAPI's own pages use a CDN).
    """
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    # The packaged ReDoc with its one hard-coded outside URL pointed at our own icon; a route
    # ahead of the mount below, so it wins. tests/browser checks that nothing else leaves.
    redoc_js = (DOCS_ASSETS / "redoc.standalone.js").read_bytes()
    redoc_js = redoc_js.replace(REDOC_LOGO_URL, f"{ASSETS_URL}/favicon.png".encode())

    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:
        return Response(redoc_js, media_type="text/javascript")

    app.mount(ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.mount("/demo", StaticFiles(directory=DEMO_DIR, html=True), name="demo")
    app.include_router(router)

    def docs_page(page: DocPage) -> Callable[[Request], Awaitable[Response]]:
        async def render(request: Request) -> Response:
            # The spec and the assets under the proxy's root path (`root_path`).
            root = request.scope.get("root_path", "")
            urls = {keyword: f"{root}{ASSETS_URL}/{file}" for keyword, file in page.assets.items()}
            name = f"{title} - {page.name}"
            return page.build(
                openapi_url=f"{root}{openapi_url}", title=name, **urls, **page.options
            )

        return render

    for path, page in DOC_PAGES.items():
        app.add_api_route(path, docs_page(page), methods=["GET"], include_in_schema=False)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it on every page, JSON answers included; a 404 there is noise.
        return FileResponse(DOCS_ASSETS / "favicon.png", media_type="image/png")

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        # A browser asks for HTML and gets the demo page; an API client (KServe's V1 liveness
        # check, curl, probes) gets KServe's V1 liveness answer.
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"{request.scope.get('root_path', '')}/demo/")
        return JSONBody({"status": "alive"})
