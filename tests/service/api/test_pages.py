"""/docs, /redoc and the demo page come from local files; the model plots from the registry."""

from __future__ import annotations

import re

import httpx


async def test_unknown_route_points_at_docs_that_load_offline(client: httpx.AsyncClient) -> None:
    missing = await client.get("/no/such/route")
    assert missing.status_code == 404
    assert "see /docs" in missing.json()["error"]
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200
        # Every script, stylesheet and icon of the page is one of ours, and it is served.
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", response.text)
        urls += re.findall(r"""url:\s*["']([^"']+)["']""", response.text)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            asset = await client.get(url)
            assert asset.status_code == 200, url
        assert "http://" not in response.text.replace("http://test", "")
        assert "https://" not in response.text


async def test_docs_assets_are_the_packaged_ones(client: httpx.AsyncClient) -> None:
    script = await client.get("/static/docs/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert len(script.content) > 500_000
    redoc = await client.get("/static/docs/redoc.standalone.js")
    assert redoc.status_code == 200 and len(redoc.content) > 500_000
    assert b"cdn.redoc.ly" not in redoc.content
    assert b"/static/docs/favicon.png" in redoc.content


async def test_root_answers_kserve_v1_liveness_to_api_clients(client: httpx.AsyncClient) -> None:
    for accept in (None, "*/*", "application/json"):
        headers = {} if accept is None else {"Accept": accept}
        response = await client.get("/", headers=headers)
        assert response.status_code == 200 and response.json() == {"status": "alive"}


async def test_root_redirects_browsers_to_demo_page(client: httpx.AsyncClient) -> None:
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await client.get("/", headers={"Accept": browser}, follow_redirects=True)
    assert response.status_code == 200
    assert str(response.url).endswith("/demo/")
    assert "<canvas" in response.text
    for asset in re.findall(r"""(?:src|href)=["']([^"'#]+)["']""", response.text):
        if asset.startswith("data:"):
            continue
        if not asset.startswith(("/", "http")):
            assert (await client.get(f"/demo/{asset}")).status_code == 200, asset
        else:
            assert asset.startswith("/"), asset


async def test_list_plots_serves_the_pngs_of_a_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models/digit_classifier/versions/1/plots")
    assert response.status_code == 200
    # The tiny test models have no plots; the committed ones do (tested below by name).
    assert response.json() == {"plots": []}
    missing = await client.get("/api/v1/models/digit_classifier/versions/1/plots/loss.png")
    assert missing.status_code == 404
    assert missing.json()["field"] == "file"
    unknown = await client.get("/api/v1/models/digit_classifier/versions/9/plots")
    assert unknown.status_code == 404


async def test_get_plot_returns_png_of_committed_model() -> None:
    from service.app import create_app
    from service.registry import ModelRegistry
    from service.settings import Settings
    from tests.service.conftest import REPO_MODELS

    registry = ModelRegistry(REPO_MODELS, ("digit_classifier",))
    registry.load(warm_up=False)
    app = create_app(Settings(model_dir=REPO_MODELS, warmup=False), registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            listing = (await client.get("/api/v1/models/digit_classifier/versions/1/plots")).json()
            names = [plot["name"] for plot in listing["plots"]]
            assert "loss.png" in names
            plot = await client.get(listing["plots"][0]["url"])
            assert plot.status_code == 200
            assert plot.headers["content-type"] == "image/png"
            assert plot.content.startswith(b"\x89PNG")
            escape = await client.get(
                "/api/v1/models/digit_classifier/versions/1/plots/..%2Fmetrics.json"
            )
            assert escape.status_code == 404


async def test_docs_pages_name_their_files_under_the_proxy_root_path() -> None:
    from fastapi import FastAPI

    from service.api import pages

    app = FastAPI(title="T", docs_url=None, redoc_url=None)
    pages.install(app)
    transport = httpx.ASGITransport(app=app, root_path="/proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as proxied:
        swagger = (await proxied.get("/proxy/docs")).text
        redoc = (await proxied.get("/proxy/redoc")).text
    assert "<title>T - Swagger UI</title>" in swagger and "<title>T - ReDoc</title>" in redoc
    for page, files in (
        (swagger, ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")),
        (redoc, ("redoc.standalone.js", "favicon.png")),
    ):
        assert "/proxy/openapi.json" in page
        for file in files:
            assert f"/proxy/static/docs/{file}" in page, file
    assert '"validatorUrl": null' in swagger  # no spec sent to validator.swagger.io
    assert "fonts.googleapis.com" not in redoc
