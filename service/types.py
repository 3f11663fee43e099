"""The data plane's request and response: named numpy arrays in, every named output back.

Protocol-neutral on purpose (as `mlserver/types`): the V2, TF Serving and task routes decode
their wire formats into an `InferenceRequest` and encode the `InferenceResponse` back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.contracts import InputContract
from service.registry import ModelVersion


@dataclass(frozen=True)
class InferenceRequest:
    """One inference on one model (version): named inputs, each a batch `[N, ...]`."""

    model: str
    #: Input name -> numpy array or nested list of numbers (validated by the data plane).
    inputs: Mapping[str, Any]
    #: None: the latest loaded version.
    version: int | None = None
    #: The outputs the client asked for, in its order (None: all of them, in signature order).
    outputs: Sequence[str] | None = None
    #: The client's request id, echoed back.
    id: str | None = None
    #: How errors name each input (`images`, `inputs[0].data`); default `<field>.<name>`, or
    #: `<field>` for a one-input model.
    fields: Mapping[str, str] = field(default_factory=dict)
    #: How errors name the set of inputs (`inputs`, `instances`).
    field: str = "inputs"
    #: Errors index the flat data of an input (`data[k]`, V2) rather than `[i][j]`.
    flat_index: bool = False
    #: Input name -> the contract to validate it against instead of the model's declared one
    #: (a task's pre-step: 0-255 pixels, checked and scaled in one pass).
    contracts: Mapping[str, InputContract] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class InferenceResponse:
    """Every output of the model version that ran, by name, each `[N, ...]`."""

    model: ModelVersion
    outputs: dict[str, np.ndarray]
    #: The output names asked for (all when the request named none), in the order asked.
    requested: tuple[str, ...]
    id: str | None = None
    #: The client sent a single unbatched item (a task endpoint may answer unbatched too).
    single: bool = False
    #: The validated inputs the model was given, by name (of the signature's dtypes and shapes):
    #: a task's post-step reads them here rather than converting the request's values again.
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
