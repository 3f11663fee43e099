"""TensorFlow Serving's REST API, so that existing TF Serving clients work unchanged.

https://www.tensorflow.org/tfx/serving/api_rest: model status, metadata (here with the model
card added), predict in the row (`instances`) and columnar (`inputs`) formats with `{"b64": ...}`
for bytes, `:classify` and `:regress` (answered as TF Serving answers them for a predict-only
signature), and version labels (`/labels/<label>`, from `Settings.version_labels`). As in TF
Serving, the body is JSON whatever its Content-Type, and an invalid argument is a 400 with
`{"error": ...}`. Each route decodes (`service.codecs.tfserving`), calls the data plane, encodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.api.body import json_body, read_json_any_type
from service.api.deps import (
    DataPlaneDep,
    FastRoute,
    RegistryDep,
    SettingsDep,
    require_api_key,
)
from service.api.errors import ERRORS
from service.api.responses import TF_SERVING_400, JSONBody
from service.codecs import tfserving
from service.dataplane import DataPlane
from service.errors import InvalidInput, NotFound
from service.registry import parse_version
from service.schemas import TFServingPredictRequest
from service.settings import Settings

router = APIRouter(
    prefix="/v1/models",
    tags=["TensorFlow Serving REST"],
    responses={
        **{k: v for k, v in ERRORS.items() if k != 422},
        400: {**ERRORS[400], "description": TF_SERVING_400},
    },
    dependencies=[Depends(require_api_key)],
    route_class=FastRoute,
)

Method = Literal["predict", "classify", "regress"]


def labelled_version(settings: Settings, name: str, label: str) -> int:
    """The version a label points at; an unknown label is a 404 naming the known ones."""
    labels = settings.version_labels.get(name, {})
    if label not in labels:
        known = ", ".join(sorted(labels)) or "none"
        raise NotFound(
            f"model {name!r} has no version label {label!r}; labels: {known}",
            field="label",
            expected=" | ".join(sorted(labels)) or "no labels are configured",
            received=repr(label),
        )
    return labels[label]


@contextmanager
def invalid_argument() -> Iterator[None]:
    """TF Serving answers INVALID_ARGUMENT with 400 (the task routes say 422)."""
    try:
        yield
    except InvalidInput as exc:
        exc.status_code = 400
        raise


async def _call(
    method: Method, name: str, version: int | None, request: Request, dataplane: DataPlane
) -> Response:
    model = dataplane.resolve(name, version)
    with invalid_argument():
        if method != "predict":
            raise tfserving.wrong_method(method)
        body = await read_json_any_type(request, TFServingPredictRequest)
        inference, row = tfserving.decode_predict(body, model)
        response = await dataplane.infer_on(model, inference)
    return JSONBody(tfserving.encode_predict(response.outputs, row))


_PREDICT_DOC = json_body(TFServingPredictRequest)


# Declared before the GET routes: `/{name}` also matches `x:predict`, and Starlette answers a
# wrong method (OPTIONS, PUT) with the Allow header of the first route whose path matches.
@router.post("/{name}:predict", openapi_extra=_PREDICT_DOC)
async def predict(name: str, request: Request, dataplane: DataPlaneDep) -> Response:
    """TF Serving predict on the latest version (`instances` or `inputs`)."""
    return await _call("predict", name, None, request, dataplane)


@router.post("/{name}/versions/{version}:predict", openapi_extra=_PREDICT_DOC)
async def predict_version(
    name: str, version: str, request: Request, dataplane: DataPlaneDep
) -> Response:
    """TF Serving predict on one version."""
    return await _call("predict", name, parse_version(version), request, dataplane)


@router.post("/{name}/labels/{label}:predict", openapi_extra=_PREDICT_DOC)
async def predict_label(
    name: str, label: str, request: Request, dataplane: DataPlaneDep, settings: SettingsDep
) -> Response:
    """TF Serving predict on the version a label points at."""
    dataplane.registry.entry(name)  # an unknown model is a 404 before its labels are looked at
    version = labelled_version(settings, name, label)
    return await _call("predict", name, version, request, dataplane)


@router.post("/{name}:classify", status_code=400)
async def classify(name: str, request: Request, dataplane: DataPlaneDep) -> Response:
    """TF Serving classify: these models have predict signatures only (a 400 saying so)."""
    return await _call("classify", name, None, request, dataplane)


@router.post("/{name}:regress", status_code=400)
async def regress(name: str, request: Request, dataplane: DataPlaneDep) -> Response:
    """TF Serving regress: these models have predict signatures only (a 400 saying so)."""
    return await _call("regress", name, None, request, dataplane)


@router.post("/{name}/versions/{version}:classify", status_code=400)
async def classify_version(
    name: str, version: str, request: Request, dataplane: DataPlaneDep
) -> Response:
    """TF Serving classify on one version (a 400: predict signatures only)."""
    return await _call("classify", name, parse_version(version), request, dataplane)


@router.post("/{name}/versions/{version}:regress", status_code=400)
async def regress_version(
    name: str, version: str, request: Request, dataplane: DataPlaneDep
) -> Response:
    """TF Serving regress on one version (a 400: predict signatures only)."""
    return await _call("regress", name, parse_version(version), request, dataplane)


@router.get("/{name}")
async def model_status(name: str, registry: RegistryDep) -> Response:
    """TF Serving model status (every version), plus KServe V1's `name` and `ready`."""
    entry = registry.entry(name)
    # KServe's V1 readiness check reads `ready` from this same path; TF Serving's clients read
    # `model_version_status` and ignore the rest.
    return JSONBody({**tfserving.status(entry), "name": name, "ready": entry.ready})


def _version_status(registry: RegistryDep, name: str, number: int) -> Response:
    entry = registry.entry(name)
    if number not in entry.versions and number not in entry.failed:
        registry.get(name, number)  # raises the 404 (or 503 while loading)
    return JSONBody(tfserving.status(entry, only=number))


@router.get("/{name}/versions/{version}")
async def model_version_status(name: str, version: str, registry: RegistryDep) -> Response:
    """TF Serving model status of one version."""
    return _version_status(registry, name, parse_version(version))


@router.get("/{name}/labels/{label}")
async def model_label_status(
    name: str, label: str, registry: RegistryDep, settings: SettingsDep
) -> Response:
    """TF Serving model status of the version a label points at."""
    registry.entry(name)  # an unknown model is a 404 before its labels are looked at
    return _version_status(registry, name, labelled_version(settings, name, label))


@router.get("/{name}/metadata")
async def model_metadata(name: str, registry: RegistryDep) -> Response:
    """TF Serving model metadata (signature) and the model card of the latest version."""
    return JSONBody(tfserving.metadata(registry.get(name)))


@router.get("/{name}/versions/{version}/metadata")
async def model_version_metadata(name: str, version: str, registry: RegistryDep) -> Response:
    """TF Serving model metadata and model card of one version."""
    return JSONBody(tfserving.metadata(registry.get(name, parse_version(version))))


@router.get("/{name}/labels/{label}/metadata")
async def model_label_metadata(
    name: str, label: str, registry: RegistryDep, settings: SettingsDep
) -> Response:
    """TF Serving model metadata of the version a label points at."""
    registry.entry(name)
    return JSONBody(tfserving.metadata(registry.get(name, labelled_version(settings, name, label))))
