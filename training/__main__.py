"""Command line of the training pipeline (console script ``mldm-train``).

    python -m training <task> [--config seed|default] [--epochs N] [--limit N]
                              [--models-dir DIR] [--version V]
    python -m training all [...]
    python -m training evaluate <model|task|all> [--models-dir DIR] [--version V] [--limit N]

Tasks: digit-classifier, digit-codec, energy-from-potential, energy-from-density, and the broad
(v2) energy tasks energy-from-potential-broad, energy-from-density-broad. Training
exports ``models/<name>/<version>/`` (SavedModel, ``metrics.json``, ``MODEL_CARD.md``, plots)
and prints a summary table, then compiles them for the service's compiled backends
(``training/compile.py``: ``model.onnx`` + ``verification.npz``; ``--no-compile`` skips it);
``evaluate`` re-measures exported SavedModels through their ``serving_default`` signature on
the test split.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.common import DEFAULT_MODELS_DIR, next_version, read_card
from training.compile import compile_exported
from training.energy_v2 import flatten
from training.tasks import TASKS, Task, resolve_version, task_of_model, task_of_version


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mldm-train", description="Train, export and evaluate the four models."
    )
    parser.add_argument(
        "command",
        choices=[*TASKS, "all", "evaluate"],
        help="a task to train, 'all' to train every task, or 'evaluate'",
    )
    parser.add_argument("target", nargs="?", help="evaluate: a model name, a task or 'all'")
    parser.add_argument(
        "--config",
        default="default",
        choices=["seed", "default"],
        help="hyper-parameters: 'seed' = the notebook's, 'default' = the improved ones (default)",
    )
    parser.add_argument("--epochs", type=int, help="override the config's number of epochs")
    parser.add_argument(
        "--limit", type=int, help="use only this many examples per split (tiny runs, tests)"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=DEFAULT_MODELS_DIR,
        help="where models/<name>/<version>/ are exported and read (default: the repo's models/)",
    )
    parser.add_argument(
        "--version", type=int, help="export/evaluate this version (default: next/latest)"
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="do not compile the exported SavedModels to model.onnx + verification.npz "
        "(`make compile-models` does it later; docs/runtimes.md)",
    )
    return parser


def _format(value: float) -> str:
    return f"{value:.6g}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def train_task(
    task: Task,
    config_name: str,
    *,
    epochs: int | None,
    limit: int | None,
    models_dir: Path,
    version: int | None,
    compile_models: bool = True,
) -> list[list[str]]:
    """Train, export and measure one task; the summary rows of its models."""
    config = task.config(config_name, epochs)
    print(f"== {task.name}: config {config.name}", flush=True)
    data = task.load_data(limit)
    result = task.train(config, data)
    version = version if version is not None else next_version(models_dir, task.models)
    exported = task.export(result, data, models_dir, version)
    rows = []
    for model in exported:
        figures = ", ".join(f"{k}={_format(model.metrics[k])}" for k in task.headline)
        rows.append(
            [
                task.name,
                model.name,
                str(model.version),
                config.name,
                f"{result.seconds:.0f}",
                figures,
            ]
        )
        print(f"exported {model.path}: {figures}", flush=True)
    if compile_models:
        compile_exported(models_dir, [model.path for model in exported])
    return rows


def evaluate_model(
    task: Task, models_dir: Path, version: int | None, limit: int | None
) -> list[str]:
    """Re-measure one task's exported model(s); print measured and card figures side by side."""
    version = resolve_version(task, models_dir, version)
    task = task_of_version(task, models_dir, version)
    data = task.load_data(limit)
    metrics = task.evaluate(models_dir, version, data)
    full_card = read_card(models_dir / task.models[0] / str(version))
    # v2 energy cards carry a per-family table besides the headline figures.
    card = {**full_card["metrics"], **flatten(full_card.get("families", {}))}
    print(f"== {task.name} v{version} ({', '.join(task.models)})")
    rows = [["metric", "measured", "model card"]]
    for key, value in metrics.items():
        rows.append([key, _format(value), _format(card[key]) if key in card else "-"])
    print(_table(rows), flush=True)
    figures = ", ".join(f"{k}={_format(metrics[k])}" for k in task.headline)
    return [task.name, ", ".join(task.models), str(version), figures]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "evaluate":
        target = args.target or "all"
        tasks = list(TASKS.values()) if target == "all" else [task_of_model(target)]
        rows = [["task", "models", "version", "figures (test split)"]]
        done = set()
        for task in tasks:
            version = resolve_version(task, args.models_dir, args.version)
            # The notebook and broad energy tasks share model names: measure each version once.
            key = (task_of_version(task, args.models_dir, version).name, version)
            if key not in done:
                done.add(key)
                rows.append(evaluate_model(task, args.models_dir, version, args.limit))
        print("\n" + _table(rows))
        return 0
    if args.target is not None:
        _parser().error(f"unexpected argument {args.target!r}")
    tasks = list(TASKS.values()) if args.command == "all" else [TASKS[args.command]]
    rows = [["task", "model", "version", "config", "seconds", "figures (test split)"]]
    for task in tasks:
        rows += train_task(
            task,
            args.config,
            epochs=args.epochs,
            limit=args.limit,
            models_dir=args.models_dir,
            version=args.version,
            compile_models=not args.no_compile,
        )
    print("\n" + _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
