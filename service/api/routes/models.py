"""The server's own model listing: every model, its state and versions, in one call."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from service.api.deps import RegistryDep, require_api_key
from service.api.errors import ERRORS
from service.api.responses import JSONBody
from service.schemas import ModelList

router = APIRouter(
    prefix="/api/v1", tags=["models"], responses=ERRORS, dependencies=[Depends(require_api_key)]
)


@router.get("/models", response_model=ModelList)
async def list_models(registry: RegistryDep) -> Response:
    """Every model the server knows: ready or not, loaded and failed versions."""
    return JSONBody(
        {
            "models": [
                {
                    "name": entry.name,
                    "ready": entry.ready,
                    "state": entry.state.value,
                    "versions": sorted(entry.versions),
                    "failed_versions": {str(v): e for v, e in sorted(entry.failed.items())},
                    "error": None if entry.ready else entry.status_message(),
                }
                for entry in registry.entries()
            ]
        }
    )
