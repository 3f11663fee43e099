"""The notebook's figures, as small PNGs written next to each model card (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

_DPI = 80


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path.name


def loss_curves(history: Mapping[str, Sequence[float]], path: Path, *, log: bool = False) -> str:
    """Training and validation loss per epoch (and accuracy when it was recorded)."""
    metrics = [k for k in ("loss", "accuracy") if k in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, key in zip(axes[0], metrics, strict=True):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        if log and key == "loss":
            ax.set_yscale("log")
        ax.legend()
    return _save(fig, path)


def digit_predictions(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, path: Path, *, rows: int = 5
) -> str:
    """A grid of test digits titled ``true -> predicted`` (mistakes in red)."""
    cols = rows
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows))
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= len(images):
            continue
        ax.imshow(images[k].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        wrong = int(labels[k]) != int(predictions[k])
        ax.set_title(f"{labels[k]} -> {predictions[k]}", color="red" if wrong else "black")
    return _save(fig, path)


def reconstructions(
    originals: np.ndarray, decoded: np.ndarray, codes: np.ndarray, path: Path, *, count: int = 10
) -> str:
    """Originals (top), their reconstructions from the uint8 code (middle), the codes (bottom)."""
    count = min(count, len(originals))
    fig, axes = plt.subplots(3, count, figsize=(1.3 * count, 4.2))
    side = int(np.ceil(np.sqrt(codes.shape[1])))
    for k in range(count):
        axes[0, k].imshow(originals[k].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        axes[1, k].imshow(decoded[k].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        padded = np.zeros(side * side)
        padded[: codes.shape[1]] = codes[k]
        axes[2, k].imshow(padded.reshape(side, side), cmap="viridis", vmin=0, vmax=255)
        for row in range(3):
            axes[row, k].set_axis_off()
    axes[0, 0].set_title("original", loc="left")
    axes[1, 0].set_title("decoded", loc="left")
    axes[2, 0].set_title(f"code ({codes.shape[1]} bytes)", loc="left")
    return _save(fig, path)


def energy_scatter(E_true: np.ndarray, E_pred: np.ndarray, path: Path, *, title: str) -> str:
    """Predicted against true energy on the test split, with the error histogram."""
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(9, 4))
    ax.scatter(E_true, E_pred, s=1, alpha=0.3)
    low, high = float(min(E_true.min(), E_pred.min())), float(max(E_true.max(), E_pred.max()))
    ax.plot([low, high], [low, high], "k--", linewidth=1)
    ax.set_xlabel("true E (Ha)")
    ax.set_ylabel("predicted E (Ha)")
    ax.set_title(title)
    error_mha = 1000 * (E_pred - E_true)
    hist.hist(error_mha, bins=100)
    hist.set_xlabel("predicted - true (mHa)")
    hist.set_ylabel("test systems")
    return _save(fig, path)


def energy_systems(
    x: np.ndarray,
    V: np.ndarray,
    n: np.ndarray,
    E_true: np.ndarray,
    E_pred: np.ndarray,
    path: Path,
    *,
    rows: int = 4,
) -> str:
    """The notebook's grid of systems: V (red), n (black), true E (blue), predicted E (cyan)."""
    fig, axes = plt.subplots(rows, rows, figsize=(2.6 * rows, 2.2 * rows), sharex=True)
    for k, ax in enumerate(axes.flat):
        if k >= len(V):
            ax.set_axis_off()
            continue
        ax.plot(x, V[k], "r-", linewidth=1.5)
        ax.plot(x, n[k], "k-", linewidth=1.5)
        ax.axhline(E_true[k], color="b", linewidth=2)
        ax.axhline(E_pred[k], color="c", linestyle="--", linewidth=2)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        ax.set_title(f"E={E_true[k]:.4f} pred={E_pred[k]:.4f}", fontsize=7)
    return _save(fig, path)
