"""`python -m bench NAME`: the scenarios found by file name, and bench/README.md's example."""

from __future__ import annotations

from typing import Any

import pytest

from bench import __main__ as dispatcher
from bench import harness


def test_dispatcher_finds_the_scenario_files(capsys: pytest.CaptureFixture[str]) -> None:
    names = dispatcher.scenarios()
    for name in ("peers", "soak", "overload", "runtimes", "flag_speed"):
        assert name in names
    assert not dispatcher.LIBRARY & set(names)  # the harness's own modules are no scenarios
    assert dispatcher.main(["peers", "soak", "--duration", "1"]) == 2
    assert dispatcher.main(["nope"]) == 2


def test_readme_scenario_example_builds_on_the_harness(capsys: pytest.CaptureFixture[str]) -> None:
    text = (harness.REPO / "bench" / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "bench/README.md", "exec"), namespace)
    with pytest.raises(SystemExit) as done:
        namespace["main"](["--help"])
    assert done.value.code == 0
    assert "--quick" in capsys.readouterr().out
