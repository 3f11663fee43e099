"""A fifth task, as a newcomer would add one: the length of 3-D vectors with a model
`vector_norm`. Its module is all it takes (plus its model folder); `test_fifth_task.py` serves
it beside the other four. It uses only what a task module in `service/tasks/` may use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from service.api.body import json_body, read_body
from service.api.deps import DataPlaneDep
from service.api.responses import JSONBody
from service.contracts import InputContract, ModelSpec
from service.dataplane import DataPlane
from service.schemas import ModelRef, RequestSchema, array_schema
from service.tasks.base import Task, infer_one, model_ref, primary, task_router

NAME = "vector_norm"
ROUTE = "/api/v1/vectors/norm"
#: Components beyond this are outside what the model was made for (a 422 on every protocol).
LIMIT = 1000.0

MODELS = (
    ModelSpec(
        NAME,
        "the Euclidean length of 3-D vectors",
        (ROUTE,),
        "norm",
        (InputContract("vectors", (3,), (-LIMIT, LIMIT, "vector components")),),
    ),
)


class NormRequest(RequestSchema):
    """Vectors to measure."""

    vectors: Annotated[Any, array_schema("One vector [3] or a batch [N, 3].", 1)]

    model_config = ConfigDict(json_schema_extra={"examples": [{"vectors": [[3.0, 4.0, 0.0]]}]})


class NormResponse(BaseModel):
    """The length of each vector, in request order."""

    model: ModelRef
    norms: list[float] = Field(description="|v| of each vector.")


async def norms(dataplane: DataPlane, vectors: Any) -> tuple[Any, np.ndarray]:
    """(model version, the length of each vector)."""
    model = dataplane.resolve(NAME)
    response = await infer_one(dataplane, model, "vectors", vectors, "vectors")
    values, _extras = primary(dataplane, response)
    return model, values.reshape(-1)


router = task_router()


@router.post(
    "/vectors/norm",
    tags=["vectors"],
    response_model=NormResponse,
    openapi_extra=json_body(NormRequest),
)
async def vector_norm(request: Request, dataplane: DataPlaneDep) -> Response:
    """The Euclidean length of each 3-D vector."""
    body = await read_body(request, NormRequest, None)
    model, values = await norms(dataplane, body.vectors)
    return JSONBody({"model": model_ref(model), "norms": values})


TASK = Task("vectors", MODELS, router)


def export_model(root: Path) -> Path:
    """The task's model folder: `root/vector_norm/1`, a real SavedModel with its card."""
    import json

    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(1.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="vectors")])
    def serve(vectors: Any) -> Any:
        return {"norm": tf.norm(vectors, axis=1) * module.scale}

    module.serve = serve
    path = root / NAME / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    card = {
        "name": NAME,
        "version": 1,
        "task": MODELS[0].task,
        "signature": {"inputs": {"vectors": [None, 3]}, "outputs": {"norm": [None]}},
    }
    (path / "metrics.json").write_text(json.dumps(card), encoding="utf-8")
    (path / "MODEL_CARD.md").write_text(f"# {NAME} v1\n", encoding="utf-8")
    return path
