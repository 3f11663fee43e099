"""The contract of one model's inputs as the data plane validates them (docs/ARCHITECTURE.md).

A task module (`service.tasks.*`) declares one `ModelSpec` per model it serves: its name, the
task routes that use it, its primary output and the contract of each input (the item shape a
client sends, the value range, integer values, a check of the whole batch). The app hands the
specs of its tasks to the data plane, which knows no model by name.

A model found on disk but declared by no task is still served by the generic protocols, validated
against its signature only (shape, dtype, finite values; uint8 inputs integers in 0-255).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: (low, high, what the values are): the range check of one input, worded for the error message.
ValueRange = tuple[float, float, str]

UINT8_RANGE: ValueRange = (0.0, 255.0, "uint8 values")


@dataclass(frozen=True)
class InputContract:
    """One input as a client sends it (the signature may add a channel dimension of 1)."""

    name: str
    #: The shape of one item as clients send it (`(28, 28)` for the `[N, 28, 28, 1]` images).
    item_shape: tuple[int, ...]
    value_range: ValueRange | None = None
    #: Values must be whole numbers (uint8 codes).
    integers: bool = False
    #: A trailing channel dimension of 1 is accepted too (`[N, 28, 28, 1]`).
    squeeze_channel: bool = False
    #: A check of the whole batch beyond the range: (batch, error field, single item) -> None.
    check: Callable[[np.ndarray, str, bool], None] | None = None
    #: Divide the validated values by this, in the model's dtype (0-255 pixels -> [0, 1]).
    divide_by: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    #: The task routes served by this model (their metrics carry its name as the model label).
    routes: tuple[str, ...]
    #: The output a task endpoint answers with; the model's other outputs are extras.
    primary_output: str
    inputs: tuple[InputContract, ...]

    def input(self, name: str) -> InputContract | None:
        return next((i for i in self.inputs if i.name == name), None)
