"""The demo page's states in a real Chromium (issue 20): nothing looks broken before the first
drawing, each panel shows only the answer to the current input, an error replaces the results,
an uploaded picture replaces the drawing and the compression panel's input, and a picture that
is not a digit is headlined as such."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.browser.conftest import ENABLED, screenshot
from tests.browser.test_demo_page import classify_drawing, open_page, text_of, wait
from tests.service.live_server import LiveServer

pytestmark = [
    pytest.mark.skipif(not ENABLED, reason="real browser: make browser-test (MLDM_BROWSER=1)"),
    pytest.mark.slow,
]

SEVEN = [(70, 60), (210, 60), (120, 235)]


def _png(tmp_path: Path, name: str, pixels: np.ndarray) -> str:
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return str(path)


def _tight_four() -> np.ndarray:
    """A drawn 4 cropped to its ink: no margin."""
    image = Image.new("L", (96, 96), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(60, 14), (20, 58), (76, 58)], fill=0, width=7)
    draw.line([(60, 14), (60, 84)], fill=0, width=7)
    pixels = np.asarray(image)
    rows = np.flatnonzero((pixels < 128).any(axis=1))
    cols = np.flatnonzero((pixels < 128).any(axis=0))
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _filled_square() -> np.ndarray:
    image = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(image).rectangle((14, 14, 50, 50), fill=0)
    return np.asarray(image)


def _upload(driver: Any, path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "photo").send_keys(path)


def _state(driver: Any) -> dict[str, Any]:
    script = """
    const $ = (id) => document.getElementById(id);
    return {
      value: $('digit-value').textContent,
      isDigit: $('digit-result').dataset.isDigit ?? null,
      bars: document.querySelectorAll('#probabilities rect').length,
      model: $('digit-model').textContent,
      inputEmpty: $('input28').classList.contains('empty'),
      outputEmpty: $('output28').classList.contains('empty'),
      code: $('code-facts').dataset.code ?? null,
    };"""
    state: dict[str, Any] = driver.execute_script(script)
    return state


def test_nothing_looks_broken_before_the_first_drawing(browser: Any, server: LiveServer) -> None:
    open_page(browser, server)
    screenshot(browser, "10-before-drawing")

    state = _state(browser)

    assert state["inputEmpty"] and state["outputEmpty"]  # placeholders, not black squares
    assert state["value"] == "" and state["bars"] == 0 and state["code"] is None
    assert text_of(browser, "digit-status") == "Draw a digit to classify it."


def test_an_error_replaces_the_previous_results(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    open_page(browser, server)
    assert classify_drawing(browser, SEVEN, "mouse") == "7"
    blank = _png(tmp_path, "blank.png", np.full((64, 64), 255, np.uint8))

    _upload(browser, blank)

    wait(browser, lambda d: "no digit found" in text_of(d, "digit-status"))
    wait(browser, lambda d: _state(d)["inputEmpty"])
    screenshot(browser, "11-error-after-drawing")
    state = _state(browser)
    assert state["value"] == "" and state["bars"] == 0 and state["model"] == ""
    assert state["inputEmpty"] and state["outputEmpty"] and state["code"] is None
    assert "not read as a digit" in text_of(browser, "code-facts")


def test_an_upload_replaces_the_drawing_and_the_compression_input(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    open_page(browser, server)
    assert classify_drawing(browser, SEVEN, "pen") == "7"
    drawn_code = _state(browser)["code"]
    upload = _png(tmp_path, "tight-four.png", _tight_four())

    _upload(browser, upload)

    wait(browser, lambda d: text_of(d, "digit-status").startswith("Predicted digit for tight"))
    wait(browser, lambda d: _state(d)["code"] not in (None, drawn_code))
    screenshot(browser, "12-upload-replaces-drawing")
    state = _state(browser)
    assert state["value"] == "4" and state["isDigit"] == "true"
    assert not state["inputEmpty"] and not state["outputEmpty"]
    # The pad shows the strokes (black) over white paper and a grey guide box.
    ink = "return document.getElementById('pad').getContext('2d')" + (
        ".getImageData(0, 0, 280, 280).data.some((v, i) => i % 4 === 0 && v < 60)"
    )
    assert browser.execute_script(ink) is False  # the drawing is gone
    assert "model_input_png" not in text_of(browser, "digit-flags")


def test_a_picture_that_is_not_a_digit_is_headlined_as_such(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    open_page(browser, server)
    square = _png(tmp_path, "square.png", _filled_square())

    _upload(browser, square)

    wait(browser, lambda d: _state(d)["isDigit"] == "false")
    screenshot(browser, "13-not-a-digit")
    assert text_of(browser, "digit-value") == "Not a digit"
    assert text_of(browser, "digit-status").startswith("Not a digit")
