"""The command line: a tiny run trains, exports a new version each time, and evaluates."""

from __future__ import annotations

import json

import pytest

from training.__main__ import main


def test_main_tiny_run_exports_next_version_and_evaluates(tmp_path, capsys) -> None:
    argv = [
        "energy-from-potential",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--models-dir",
        str(tmp_path),
    ]

    assert main(argv) == 0
    assert main([*argv, "--config", "seed", "--no-compile"]) == 0

    assert sorted(p.name for p in (tmp_path / "energy_from_potential").iterdir()) == ["1", "2"]
    card = json.loads((tmp_path / "energy_from_potential" / "2" / "metrics.json").read_text())
    assert card["config"] == "seed" and card["version"] == 2
    # Compiled at export (training/compile.py) unless told not to.
    first = tmp_path / "energy_from_potential" / "1"
    assert (first / "model.onnx").is_file() and (first / "verification.npz").is_file()
    assert json.loads((first / "metrics.json").read_text())["compiled"]["onnxruntime"]["file"]
    assert not (tmp_path / "energy_from_potential" / "2" / "model.onnx").exists()
    capsys.readouterr()
    assert (
        main(["evaluate", "energy_from_potential", "--limit", "64", "--models-dir", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "energy-from-potential v2" in out and "test_rmse_mha" in out


def test_main_evaluate_unknown_model_fails(tmp_path) -> None:
    with pytest.raises(KeyError, match="unknown model"):
        main(["evaluate", "no_such_model", "--models-dir", str(tmp_path)])
