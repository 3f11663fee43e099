"""Operator routes: `POST /admin/reload` loads model versions dropped into the model directory.

Behind the API key, and switched off (403) when no key is configured: a reload makes the server
read and load files, which no anonymous client should be able to trigger.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from service.api.deps import SettingsDep, require_api_key
from service.api.errors import ERRORS
from service.api.responses import JSONBody
from service.errors import ServiceError
from service.reloader import Reloader


class ReloadedModel(BaseModel):
    """One model after the reload."""

    name: str
    versions: list[int] = Field(description="Loaded versions, all of them (old ones stay).")
    loaded: list[int] = Field(description="Versions this reload added.")
    failed_versions: dict[str, str] = Field(description="Versions that failed, with the error.")


class ReloadResponse(BaseModel):
    """What the reload did."""

    models: list[ReloadedModel]


def require_admin(settings: SettingsDep) -> None:
    """The admin routes exist only when an API key protects them."""
    if settings.api_key is None:
        raise ServiceError(
            "the admin API is disabled: set MLDM_API_KEY to enable it",
            field="X-API-Key",
            expected="a configured API key",
            received="none configured",
            status_code=403,
        )


def get_reloader(request: Request) -> Reloader:
    reloader: Reloader = request.app.state.reloader
    return reloader


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses={
        401: ERRORS[401],
        403: {**ERRORS[401], "description": "No API key is configured: the admin API is off"},
    },
    dependencies=[Depends(require_admin), Depends(require_api_key)],
)


@router.post("/reload", response_model=ReloadResponse)
async def reload_models(reloader: Annotated[Reloader, Depends(get_reloader)]) -> Response:
    """Load new model versions from the model directory; loaded versions keep serving."""
    report = await reloader.reload()
    return JSONBody(
        {
            "models": [
                {
                    "name": m.name,
                    "versions": m.versions,
                    "loaded": m.loaded,
                    "failed_versions": m.failed_versions,
                }
                for m in report.models
            ]
        }
    )
