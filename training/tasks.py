"""The registry of the four training tasks: one uniform interface over the task modules, which
the command line (``training.__main__``) and the tests use."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training import digit_classifier, digit_codec, digit_robust, energy, energy_v2
from training.common import Exported, TrainResult, latest_version


@dataclass(frozen=True)
class Task:
    """A task: its configs, how to load its data, train, export and re-evaluate it."""

    name: str
    #: SavedModel names this task exports (they share one version number).
    models: tuple[str, ...]
    configs: dict[str, Any]
    load_data: Callable[[int | None], Any]
    train: Callable[[Any, Any], TrainResult]
    export: Callable[[TrainResult, Any, Path, int], list[Exported]]
    #: ``evaluate(models_dir, version, data)`` -> metrics through the exported signature(s).
    evaluate: Callable[[Path, int, Any], dict[str, float]]
    #: The metrics printed in the summary table.
    headline: tuple[str, ...]

    def config(self, name: str, epochs: int | None = None) -> Any:
        if name not in self.configs:
            raise KeyError(
                f"{self.name} has no config {name!r}; choose from {sorted(self.configs)}"
            )
        config = self.configs[name]
        return config if epochs is None else replace(config, epochs=epochs)


def _energy_task(task: energy.EnergyTask) -> Task:
    def evaluate(models_dir: Path, version: int, data: Any) -> dict[str, float]:
        return energy.evaluate(task, models_dir / task.name / str(version), data)

    headline = ("test_rmse_mha", "test_mse")
    if task is energy.DENSITY:
        headline = ("test_mse", "test_mse_on_e_minus_c")
    return Task(
        name=task.task,
        models=(task.name,),
        configs=task.configs,
        load_data=energy.load_data,
        train=functools.partial(_train_energy, task=task),
        export=functools.partial(_export_energy, task=task),
        evaluate=evaluate,
        headline=headline,
    )


def _train_energy(config: Any, data: Any, *, task: energy.EnergyTask) -> TrainResult:
    return energy.train(config, data, task)


def _export_energy(
    result: TrainResult, data: Any, models_dir: Path, version: int, *, task: energy.EnergyTask
) -> list[Exported]:
    return energy.export(result, data, task, models_dir, version)


def _broad_task(task: energy_v2.BroadTask) -> Task:
    def train(config: Any, data: Any) -> TrainResult:
        return energy_v2.train(config, data, task)

    def export(result: TrainResult, data: Any, models_dir: Path, version: int) -> list[Exported]:
        return energy_v2.export(result, data, task, models_dir, version)

    def evaluate(models_dir: Path, version: int, data: Any) -> dict[str, float]:
        return energy_v2.evaluate(task, models_dir / task.name / str(version), data)

    return Task(
        name=task.task,
        models=(task.name,),
        configs=task.configs,
        load_data=energy_v2.load_data,
        train=train,
        export=export,
        evaluate=evaluate,
        headline=("test_rmse_mha", "worst_heldout_mae_mha", "worst_heldout_coverage95"),
    )


def _evaluate_classifier(models_dir: Path, version: int, data: Any) -> dict[str, float]:
    return digit_classifier.evaluate(models_dir / digit_classifier.NAME / str(version), data)


def _evaluate_robust(models_dir: Path, version: int, data: Any) -> dict[str, float]:
    return digit_robust.evaluate(models_dir / digit_classifier.NAME / str(version), data)


def _evaluate_codec(models_dir: Path, version: int, data: Any) -> dict[str, float]:
    return digit_codec.evaluate(
        models_dir / digit_codec.ENCODER / str(version),
        models_dir / digit_codec.DECODER / str(version),
        data,
    )


TASKS: dict[str, Task] = {
    digit_classifier.TASK: Task(
        name=digit_classifier.TASK,
        models=(digit_classifier.NAME,),
        configs=digit_classifier.CONFIGS,
        load_data=digit_classifier.load_data,
        train=digit_classifier.train,
        export=digit_classifier.export,
        evaluate=_evaluate_classifier,
        headline=("test_accuracy", "test_errors"),
    ),
    digit_robust.TASK: Task(
        name=digit_robust.TASK,
        models=(digit_classifier.NAME,),
        configs=digit_robust.CONFIGS,
        load_data=digit_classifier.load_data,
        train=digit_robust.train,
        export=digit_robust.export,
        evaluate=_evaluate_robust,
        headline=("test_accuracy", "test_ece", "test_digits_accepted"),
    ),
    digit_codec.TASK: Task(
        name=digit_codec.TASK,
        models=(digit_codec.ENCODER, digit_codec.DECODER),
        configs=digit_codec.CONFIGS,
        load_data=digit_codec.load_data,
        train=digit_codec.train,
        export=digit_codec.export,
        evaluate=_evaluate_codec,
        headline=("bytes_per_code", "test_psnr_db"),
    ),
    energy.POTENTIAL.task: _energy_task(energy.POTENTIAL),
    energy.DENSITY.task: _energy_task(energy.DENSITY),
    energy_v2.POTENTIAL.task: _broad_task(energy_v2.POTENTIAL),
    energy_v2.DENSITY.task: _broad_task(energy_v2.DENSITY),
}


def task_of_model(name: str) -> Task:
    """The task that exports SavedModel ``name`` (or the task called ``name``)."""
    if name in TASKS:
        return TASKS[name]
    for task in TASKS.values():
        if name in task.models:
            return task
    known = sorted(TASKS) + sorted(m for t in TASKS.values() for m in t.models)
    raise KeyError(f"unknown model or task {name!r}; choose from {known}")


def resolve_version(task: Task, models_dir: Path, version: int | None) -> int:
    """``version``, or the latest exported version of the task's first model."""
    return version if version is not None else latest_version(models_dir, task.models[0])


def task_of_version(task: Task, models_dir: Path, version: int) -> Task:
    """The task that exported this version of ``task``'s model: the broad (v2) energy tasks share
    model names with the notebook ones, and their model cards say so (``training_task``)."""
    broad = energy_v2.card_task(models_dir, task.models[0], version)
    return TASKS[broad.task] if broad is not None else task
