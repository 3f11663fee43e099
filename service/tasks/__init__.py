"""The tasks of the API, registered once: every list of model names derives from `TASKS`.

One module per task (`digits`, `codec`, `energy`), each ending with `TASK = Task(...)`: its
models' contracts, its routes, its wire schemas, its pre-steps and post-steps. The app serves
the tasks it is given (`create_app(..., tasks=TASKS)`), readiness waits for their models, the
data plane validates against their contracts, the metrics label their routes with their models.
`model_names()` is the one list of model names (compose, the TF Serving config, schemathesis'
dictionary and the tests are checked against it: tests/service/tasks/test_registry.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from service.contracts import ModelSpec
from service.tasks import codec, digits, energy
from service.tasks.base import Task

__all__ = ["TASKS", "Task", "model_names", "model_specs", "route_models"]

TASKS: tuple[Task, ...] = (digits.TASK, codec.TASK, energy.TASK)


def model_specs(tasks: Sequence[Task] = TASKS) -> dict[str, ModelSpec]:
    """Every model the tasks serve, by name, in task order."""
    specs: dict[str, ModelSpec] = {}
    for task in tasks:
        for spec in task.models:
            if spec.name in specs:
                raise ValueError(f"model {spec.name!r} is declared by two tasks")
            specs[spec.name] = spec
    return specs


def model_names(tasks: Sequence[Task] = TASKS) -> tuple[str, ...]:
    """The names of the models the tasks serve: the models readiness waits for by default."""
    return tuple(model_specs(tasks))


def route_models(tasks: Sequence[Task] = TASKS) -> dict[str, str]:
    """The model behind each task route (its metrics' model label)."""
    return {route: spec.name for spec in model_specs(tasks).values() for route in spec.routes}
