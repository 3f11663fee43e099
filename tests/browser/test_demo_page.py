"""The demo page and /docs in a real Chromium, against the real server with the committed models.

Each test checks what a person would see: the page loads with no console error and no request
leaving the machine; a 1 and a 7 drawn as strokes (pointer events: mouse and pen) are classified;
the code and the reconstruction appear, with the API's numbers; an energy preset shows the
numbers the API gives for the very body the page sent; /docs and /redoc render offline.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ENABLED, console_errors, foreign, requests, screenshot
from tests.service.live_server import LiveServer

pytestmark = [
    pytest.mark.skipif(not ENABLED, reason="real browser: make browser-test (MLDM_BROWSER=1)"),
    pytest.mark.slow,
]

TIMEOUT_S = 60


def wait(driver: Any, condition: Any, timeout: float = TIMEOUT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = driver.find_element(By.ID, element_id).text
    return text


def open_page(driver: Any, server: LiveServer) -> None:
    requests(driver)  # drop what earlier tests left in the log
    driver.get(f"{server.url}/")
    # The cards are closed <details>: their text is in the DOM, not on screen.
    cards = "return document.getElementById('model-cards').textContent"
    wait(driver, lambda d: "Version 1" in d.execute_script(cards))
    wait(
        driver,
        lambda d: d.execute_script(
            "return !!document.getElementById('energy-facts').dataset.exact"
        ),
    )


def stroke(driver: Any, points: list[tuple[float, float]], kind: str) -> None:
    """One stroke through `points` (pad coordinates, 0-280) with a mouse, pen or touch pointer."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    width, height = pad.rect["width"], pad.rect["height"]

    def offset(point: tuple[float, float]) -> tuple[int, int]:  # from the element's centre
        return round(point[0] * width / 280 - width / 2), round(
            point[1] * height / 280 - height / 2
        )

    builder = ActionBuilder(driver, mouse=PointerInput(kind, f"{kind}-1"))
    pointer = builder.pointer_action
    pointer.move_to(pad, *offset(points[0]))
    pointer.pointer_down()
    for start, end in itertools.pairwise(points):
        for step in range(1, 9):  # intermediate moves, as a hand gives them
            t = step / 8
            pointer.move_to(
                pad,
                *offset((start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))),
            )
    pointer.pointer_up()
    builder.perform()


def classify_drawing(driver: Any, points: list[tuple[float, float]], kind: str) -> str:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "clear").click()
    stroke(driver, points, kind)
    wait(driver, lambda d: text_of(d, "digit-status").startswith("Predicted digit"))
    wait(
        driver,
        lambda d: d.execute_script("return !!document.getElementById('code-facts').dataset.psnr"),
    )
    return text_of(driver, "digit-value")


def posted(sent: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [r for r in sent if r["method"] == "POST" and r["url"].endswith(path)]


def test_page_loads_offline_with_no_console_errors(browser: Any, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    sent = requests(browser)
    screenshot(browser, "01-page-loaded")
    assert foreign(sent, server.url) == []
    assert console_errors(browser) == []
    urls = {r["url"].removeprefix(server.url) for r in sent}
    assert {"/demo/", "/demo/demo.js", "/demo/demo.css", "/api/v1/models"} <= urls
    # The model cards come from the API: each committed model is listed with its versions.
    cards = text_of(browser, "model-cards")
    for name in ("digit_classifier", "digit_encoder", "energy_from_potential"):
        assert name in cards
    # Opened, a card shows the version's metrics and its training plots, served by the server.
    card = browser.find_element(By.CSS_SELECTOR, 'details[data-model="digit_classifier"]')
    card.find_element(By.TAG_NAME, "summary").click()
    browser.execute_script("arguments[0].scrollIntoView()", card)
    loaded = (
        "return [...arguments[0].querySelectorAll('img')].map(i => i.complete && i.naturalWidth)"
    )
    wait(browser, lambda d: (sizes := d.execute_script(loaded, card)) and all(sizes))
    assert "test_accuracy" in card.text
    screenshot(browser, "01-model-card")
    assert foreign(requests(browser), server.url) == []
    assert console_errors(browser) == []


@pytest.mark.parametrize(
    ("digit", "points", "kind"),
    [
        ("1", [(140, 45), (138, 235)], "mouse"),
        ("7", [(70, 60), (210, 60), (120, 235)], "pen"),
    ],
)
def test_draw_digit_is_classified_and_compressed(
    browser: Any, server: LiveServer, digit: str, points: list[tuple[float, float]], kind: str
) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    requests(browser)
    predicted = classify_drawing(browser, points, kind)
    screenshot(browser, f"02-drawn-{digit}")
    assert predicted == digit, text_of(browser, "digit-result")
    bars = browser.find_elements(By.CSS_SELECTOR, "#probabilities rect")
    assert len(bars) == 10
    probabilities = [float(bar.get_attribute("data-p")) for bar in bars]
    assert max(range(10), key=lambda i: probabilities[i]) == int(digit)
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-4)

    # The compression panel shows the API's code for the very pixels the page sent.
    sent = requests(browser)
    (compress,) = posted(sent, "/api/v1/digits/compress")
    body = json.loads(compress["postData"])
    answer = httpx.post(f"{server.url}/api/v1/digits/compress", json=body).json()
    code = answer["codes"][0]
    facts = browser.find_element(By.ID, "code-facts")
    assert facts.get_attribute("data-code") == code
    shown = facts.text
    assert code in shown
    hex_code = " ".join(f"{b:02x}" for b in base64.b64decode(code))
    assert hex_code in shown
    decoded = httpx.post(
        f"{server.url}/api/v1/digits/decompress", json={"codes": [code], "output": "array"}
    ).json()["images"][0]
    squared = sum((body["images"][y][x] - decoded[y][x]) ** 2 for y in range(28) for x in range(28))
    psnr = 10 * math.log10(784 / squared)
    assert math.isclose(float(facts.get_attribute("data-psnr")), psnr, abs_tol=1e-4)
    assert f"{psnr:.2f} dB" in shown
    screenshot(browser, f"03-compressed-{digit}")
    assert foreign(sent, server.url) == []
    assert console_errors(browser) == []


def test_energy_preset_shows_the_api_numbers(browser: Any, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    before = browser.find_element(By.ID, "energy-facts").get_attribute("data-exact")
    requests(browser)
    browser.find_element(By.CSS_SELECTOR, 'input[name="preset"][value="harmonic"]').click()
    wait(
        browser,
        lambda d: d.find_element(By.ID, "energy-facts").get_attribute("data-exact") != before,
    )
    sent = requests(browser)
    requested = posted(sent, "/api/v1/energy/from-potential")[-1]
    body = json.loads(requested["postData"])
    assert body["include_exact"] is True and len(body["potentials"]) == 64
    answer = httpx.post(f"{server.url}/api/v1/energy/from-potential", json=body).json()
    exact = httpx.post(
        f"{server.url}/api/v1/energy/exact", json={"potentials": body["potentials"]}
    ).json()
    facts = browser.find_element(By.ID, "energy-facts")
    assert float(facts.get_attribute("data-predicted")) == answer["energies"][0]
    assert float(facts.get_attribute("data-exact")) == exact["energies"][0]
    shown = facts.text
    assert f"{answer['energies'][0]:.6g}" in shown
    assert f"{exact['energies'][0]:.6g}" in shown
    assert f"{answer['errors'][0] * 1000:.3g}" in shown
    # V(x), n(x) and both energy lines are drawn.
    for element_id in ("v-line", "n-line", "e-exact", "e-predicted"):
        assert browser.find_element(By.ID, element_id)
    browser.execute_script("document.getElementById('energy').scrollIntoView()")
    screenshot(browser, "04-energy-harmonic")
    assert foreign(sent, server.url) == []
    assert console_errors(browser) == []


def test_page_fits_a_phone_screen(browser: Any, server: LiveServer) -> None:
    browser.set_window_size(390, 844)
    try:
        open_page(browser, server)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        screenshot(browser, "05-phone")
        assert overflow <= 0
        stroke(browser, [(140, 45), (138, 235)], "touch")
        wait(browser, lambda d: text_of(d, "digit-status").startswith("Predicted digit"))
        assert text_of(browser, "digit-value") == "1"
        screenshot(browser, "06-phone-drawn-1")
    finally:
        browser.set_window_size(1200, 1600)


def test_docs_render_operations_offline(browser: Any, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    requests(browser)
    browser.get(f"{server.url}/no/such/page")
    assert "see /docs" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{server.url}/docs")
    schema = httpx.get(f"{server.url}/openapi.json").json()
    operations = sum(len(ops) for ops in schema["paths"].values())
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= operations)
    # Open the classify operation: its 400 example is the server's own answer to a bad body.
    summary = browser.find_element(
        By.CSS_SELECTOR,
        "#operations-digits-classify_digits_api_v1_digits_classify_post .opblock-summary",
    )
    summary.click()
    wait(browser, lambda d: "body is not valid JSON" in d.find_element(By.ID, "swagger-ui").text)
    example = browser.find_element(By.XPATH, "//*[contains(text(), 'body is not valid JSON')]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", example)
    screenshot(browser, "07-docs")
    browser.get(f"{server.url}/redoc")
    wait(
        browser, lambda d: "Classify 28x28 digit images" in d.find_element(By.TAG_NAME, "body").text
    )
    screenshot(browser, "08-redoc")
    sent = requests(browser)
    assert foreign(sent, server.url) == []
    # The unknown page's 404 is the one console error, and it is the point of the test.
    errors = [e for e in console_errors(browser) if "/no/such/page" not in e["message"]]
    assert errors == []
