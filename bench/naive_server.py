"""The naive reference server of the serving benchmark, as tutorials write one: FastAPI with
pydantic bodies, the SavedModels reloaded as Keras models (`keras.layers.TFSMLayer`), one
`model.predict(x)` per request in plain `def` routes (FastAPI's thread pool: the kinder tutorial
style), `.tolist()` answers; our task routes' JSON for classify and energy from potential.
``python -m bench.naive_server --port P [--model-dir models]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bench.harness import REPO, latest_version

REPO_MODELS = REPO / "models"


def keras_model(path: Path, input_name: str, shape: tuple[int, ...]) -> Any:
    import keras

    inputs = keras.Input(shape=shape, name=input_name)
    outputs = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")(inputs)
    return keras.Model(inputs, outputs)


class ClassifyRequest(BaseModel):
    images: list[Any]
    scale: str = "unit"


class PotentialRequest(BaseModel):
    potentials: list[Any]


def create_app(model_dir: Path = REPO_MODELS) -> FastAPI:
    import numpy as np

    inputs = {
        "digit_classifier": ("images", (28, 28, 1)),
        "energy_from_potential": ("potential", (64,)),
    }
    models = {m: keras_model(p, *inputs[m]) for m in inputs if (p := latest_version(model_dir, m))}

    app = FastAPI(title="naive reference server")

    def model(name: str) -> Any:
        if name not in models:
            raise HTTPException(503, f"model {name} is not loaded")
        return models[name]

    @app.get("/v2/health/ready")
    def ready() -> dict[str, Any]:
        return {"ready": True, "models": sorted(models)}

    @app.post("/api/v1/digits/classify")
    def classify(request: ClassifyRequest) -> dict[str, Any]:
        x = np.array(request.images, dtype=np.float32)
        if request.scale == "byte":
            x = x / 255.0
        x = x.reshape(-1, 28, 28, 1)
        probabilities = model("digit_classifier").predict(x, verbose=0)["probabilities"]
        return {
            "model": {"name": "digit_classifier"},
            "predictions": [
                {"digit": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities
            ],
        }

    @app.post("/api/v1/energy/from-potential")
    def energy_from_potential(request: PotentialRequest) -> dict[str, Any]:
        x = np.array(request.potentials, dtype=np.float32).reshape(-1, 64)
        energies = model("energy_from_potential").predict(x, verbose=0)["energy"]
        return {
            "model": {"name": "energy_from_potential"},
            "unit": "hartree",
            "energies": energies.reshape(-1).tolist(),
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-dir", type=Path, default=REPO_MODELS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import uvicorn

    uvicorn.run(create_app(args.model_dir), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
