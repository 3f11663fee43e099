"""The request bodies of every protocol (the same bytes for every server: inputs from fixed seeds)
and `values`, which reads the primary output out of any answer, so that a run checks that every
server computed the same numbers, not only that it said 200."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.driver import Body

JSON = "application/json"
NPY = "application/x-npy"
OCTET = "application/octet-stream"
#: Triton's binary tensor data extension: length of the JSON part that precedes the tensors.
HEADER_LENGTH = "Inference-Header-Content-Length"

#: Protocol routes, in the order of the tables.
KINDS = ("v2", "v2-binary", "task", "npy", "tfserving")
KIND_TITLES = dict(
    zip(KINDS, ("V2 JSON", "V2 binary", "task JSON", ".npy", "TF Serving row"), strict=True)
)


def images(count: int, seed: int) -> np.ndarray:
    """Digit-like float32 images [count, 28, 28] in [0, 1] (values do not change the cost)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 28, 28), dtype=np.float32)
    out[:, 4:24, 6:22] = rng.random((count, 20, 16), dtype=np.float32)
    return out


def potentials(count: int, seed: int) -> np.ndarray:
    """Float32 potentials [count, 64] in Hartree on linspace(-15, 15, 64): wells and bumps."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-15.0, 15.0, 64)
    k = rng.uniform(0.01, 0.2, size=(count, 1))
    depth = rng.uniform(0.0, 2.0, size=(count, 1))
    centre = rng.uniform(-3.0, 3.0, size=(count, 1))
    return (0.5 * k * x**2 - depth * np.exp(-((x - centre) ** 2))).astype(np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class ModelCase:
    """One of the two benchmarked models: its V2 input and output, and its task route."""

    key: str  # "classify" | "energy"
    model: str
    input_name: str
    output_name: str
    task_path: str
    values_per_item: int

    def inputs(self, count: int, seed: int) -> np.ndarray:
        """The model input [count, ...] as its signature takes it (float32)."""
        if self.key == "classify":
            return images(count, seed)[..., None]
        return potentials(count, seed)


CLASSIFY = ModelCase(
    "classify", "digit_classifier", "images", "probabilities", "/api/v1/digits/classify", 10
)
ENERGY = ModelCase(
    "energy", "energy_from_potential", "potential", "energy", "/api/v1/energy/from-potential", 1
)
CASES = {case.key: case for case in (CLASSIFY, ENERGY)}


def json_body(path: str, body: Any) -> Body:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return Body("POST", path, payload, (("Content-Type", JSON),))


def v2_path(case: ModelCase) -> str:
    return f"/v2/models/{case.model}/infer"


def _tensor(case: ModelCase, array: np.ndarray, **fields: Any) -> dict[str, Any]:
    return {"name": case.input_name, "shape": list(array.shape), "datatype": "FP32", **fields}


def v2_json(case: ModelCase, array: np.ndarray) -> Body:
    tensor = _tensor(case, array, data=array.reshape(-1).tolist())
    return json_body(v2_path(case), {"inputs": [tensor]})


def v2_binary(case: ModelCase, array: np.ndarray) -> Body:
    """Triton's binary tensor data extension: a JSON header (its length in `HEADER_LENGTH`, each
    tensor's `binary_data_size`, outputs asked for in binary too), then the raw tensor."""
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    tensor = _tensor(case, array, parameters={"binary_data_size": len(raw)})
    document = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
    header = json.dumps(document, separators=(",", ":")).encode()
    headers = (("Content-Type", OCTET), (HEADER_LENGTH, str(len(header))))
    return Body("POST", v2_path(case), header + raw, headers)


def task_json(case: ModelCase, array: np.ndarray) -> Body:
    if case.key == "classify":
        return json_body(case.task_path, {"images": array[..., 0].tolist(), "scale": "unit"})
    return json_body(case.task_path, {"potentials": array.tolist()})


def npy(case: ModelCase, array: np.ndarray) -> Body:
    body = npy_bytes(array[..., 0] if case.key == "classify" else array)
    path = case.task_path + ("?scale=unit" if case.key == "classify" else "")
    return Body("POST", path, body, (("Content-Type", NPY), ("Accept", NPY)))


def tfserving_row(case: ModelCase, array: np.ndarray) -> Body:
    return json_body(f"/v1/models/{case.model}:predict", {"instances": array.tolist()})


ENCODERS = dict(zip(KINDS, (v2_json, v2_binary, task_json, npy, tfserving_row), strict=True))


def bodies(case: ModelCase, kind: str, items: int, variants: int, seed: int = 1) -> list[Body]:
    """`variants` different requests of `items` items each (the load cycles through them)."""
    encode = ENCODERS[kind]
    return [encode(case, case.inputs(items, seed + i)) for i in range(variants)]


def _v2_outputs(document: Any, case: ModelCase) -> Any:
    if isinstance(document, list):  # BentoML's batchable API: the list of this request's parts
        document = document[0]
    outputs = document["outputs"]
    return next((o for o in outputs if o.get("name") == case.output_name), outputs[0])


def _binary_v2(body: bytes, headers: dict[str, str], case: ModelCase) -> np.ndarray:
    length = int(headers[HEADER_LENGTH.lower()])
    document = json.loads(body[:length])
    offset = length
    for output in document["outputs"]:
        size = int(output.get("parameters", {}).get("binary_data_size", 0))
        if output.get("name") == case.output_name or len(document["outputs"]) == 1:
            if size:
                return np.frombuffer(body[offset : offset + size], dtype="<f4")
            return np.asarray(output["data"], dtype=np.float64).reshape(-1)
        offset += size
    raise ValueError(f"no output {case.output_name!r} in {document}")


def values(kind: str, case: ModelCase, body: bytes, headers: dict[str, str]) -> np.ndarray:
    """The primary output of an answer as a flat float array; ValueError if it has none."""
    headers = {k.lower(): v for k, v in headers.items()}
    try:
        if HEADER_LENGTH.lower() in headers:
            return _binary_v2(body, headers, case).astype(np.float64)
        if headers.get("content-type", "").startswith(NPY):
            return np.load(io.BytesIO(body), allow_pickle=False).astype(np.float64).reshape(-1)
        document = json.loads(body)
        if kind in ("v2", "v2-binary"):
            data = _v2_outputs(document, case)["data"]
        elif kind == "tfserving":
            data = document["predictions"]
        elif case.key == "classify":
            data = [p["probabilities"] for p in document["predictions"]]
        else:
            data = document["energies"]
        return np.asarray(data, dtype=np.float64).reshape(-1)
    except (KeyError, IndexError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable {kind} answer ({exc}): {body[:160]!r}") from None
