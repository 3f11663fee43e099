"""requirements.lock: the image's runtime pins, consistent with pyproject.toml and the dev lock."""

from __future__ import annotations

from packaging.requirements import Requirement

from deploy.lock import render
from tests.deploy.conftest import ROOT, normalise, requirement_pins

# The platform the image runs on: python:3.11-slim on Linux x86-64.
IMAGE_MARKERS = {
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
# Required at run time (tensorflow, astunparse) but left out of `pip freeze`, so of the dev lock.
NOT_FROZEN = {"setuptools", "wheel", "pip"}


def test_lock_covers_every_runtime_dependency_of_the_image(pyproject: dict) -> None:
    pins = requirement_pins(ROOT / "requirements.lock")
    for text in pyproject["project"]["dependencies"]:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(IMAGE_MARKERS):
            continue
        name = normalise(requirement.name)
        assert name in pins, f"{requirement.name} is missing from requirements.lock"
        assert requirement.specifier.contains(pins[name]), (requirement, pins[name])


def test_lock_pins_the_same_versions_as_the_dev_lock() -> None:
    runtime = requirement_pins(ROOT / "requirements.lock")
    dev = requirement_pins(ROOT / "requirements-dev.lock")
    differing = {
        name: (version, dev.get(name))
        for name, version in runtime.items()
        if name not in NOT_FROZEN and dev.get(name) != version
    }
    assert not differing, f"requirements.lock vs requirements-dev.lock: {differing}"


def test_lock_leaves_out_the_dev_extra_and_the_other_platform(pyproject: dict) -> None:
    pins = requirement_pins(ROOT / "requirements.lock")
    dev_extra = {
        normalise(Requirement(text).name)
        for text in pyproject["project"]["optional-dependencies"]["dev"]
    }
    assert not dev_extra & set(pins), sorted(dev_extra & set(pins))
    # tensorflow-cpu is the image's TensorFlow; the full wheel would add the CUDA libraries.
    assert "tensorflow-cpu" in pins and "tensorflow" not in pins
    assert "mldm-serving" not in pins, "the project is installed from source, not from the lock"


def test_render_lock_writes_sorted_exact_pins() -> None:
    text = render([("absl-py", "2.5.1"), ("Werkzeug", "3.1.9")])
    assert text.startswith("#")
    assert text.splitlines()[-2:] == ["absl-py==2.5.1", "Werkzeug==3.1.9"]
