"""The playground page in headless Chromium (marker ``browser``).

Skipped when Selenium, /usr/bin/chromium or /usr/bin/chromedriver is missing; .ci/run installs
them. The page is driven through its own controls (selects, buttons, clicks on the inputs), as
a user would.
"""
import math

import numpy as np
import pytest

from fastmlp.playground import screenshot as ui

pytestmark = pytest.mark.browser

_missing = ui.unavailable()
if _missing:
    pytest.skip(f"browser tests need Selenium and Chromium: {_missing}",
                allow_module_level=True)

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with ui.running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def driver():
    with ui.chrome() as d:
        yield d


def canvas_data(driver, element_id):
    return driver.execute_script(f"return document.getElementById('{element_id}')"
                                 f".toDataURL();")


def hover_text(driver, css, target_id="tooltip"):
    el = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
    ActionChains(driver).move_to_element(el).perform()
    return ui.wait_for(driver, lambda d: d.find_element(By.ID, target_id).text, 10,
                       f"text of #{target_id} on hover over {css}")


def number_after(text, word):
    """The number that follows ``word`` in text ('weight 5' -> 5.0)."""
    rest = text.split(word, 1)[1].split()
    return float(rest[0])


def test_spiral_trains_in_the_page(driver, server):
    ui.open_page(driver, server.url)
    ui.setup_spiral(driver)
    assert ui.hidden_widths(driver) == [8, 8]
    assert driver.find_element(By.ID, "activation").get_attribute("value") == "tanh"
    assert len(driver.find_elements(By.CSS_SELECTOR, "path.link")) == 4 * 8 + 8 * 8 + 8
    before_map = canvas_data(driver, "heatmap")
    before_loss = ui.test_loss(driver)
    assert before_loss > 0.5
    ui.train_until(driver, 0.2, timeout=120)
    assert ui.test_loss(driver) < 0.2
    assert canvas_data(driver, "heatmap") != before_map
    points = int(driver.find_element(By.ID, "loss-curve").get_attribute("data-points"))
    assert points >= 2
    assert int(driver.find_element(By.ID, "stepcount").text) > 0
    assert not driver.find_element(By.ID, "status").text
    assert not console_errors(driver)


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_each_tab_has_a_session_and_leaving_frees_it(driver, server):
    ui.open_page(driver, server.url)
    first = driver.current_window_handle
    ui.wait_for(driver, lambda d: len(server.store) == 1, 10, "one session")
    driver.switch_to.new_window("tab")
    ui.open_page(driver, server.url)
    ui.wait_for(driver, lambda d: len(server.store) == 2, 10, "a session per tab")
    driver.get("about:blank")          # pagehide: the page closes its session
    ui.wait_for(driver, lambda d: len(server.store) == 1, 10, "the session closed")
    driver.close()
    driver.switch_to.window(first)
    driver.get("about:blank")
    ui.wait_for(driver, lambda d: len(server.store) == 0, 10, "every session closed")
    assert not console_errors(driver)


def test_lecture_example_shows_its_values(driver, server):
    ui.open_page(driver, server.url)
    ui.click(driver, "#lecture")
    assert driver.execute_script("return document.body.dataset.mode;") == "lecture"
    assert driver.find_element(By.ID, "play").get_attribute("disabled") is not None
    # weight from x1 to the first sigmoid unit: 5; from that unit to the output: -3
    text = hover_text(driver, "#link-0-0-0")
    assert number_after(text, "weight") == 5.0 and "from x1" in text
    text = hover_text(driver, "#link-1-0-0")
    assert number_after(text, "weight") == -3.0
    text = hover_text(driver, "#bias-1-0")
    assert number_after(text, "bias") == 1.0
    # The output at the centre of the plane, (0, 0): -3 (sigma(1) + sigma(1)).
    canvas = driver.find_element(By.ID, "heatmap")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    ActionChains(driver).move_to_element(canvas).perform()
    probe = ui.wait_for(driver, lambda d: d.find_element(By.ID, "probe").text.strip(), 10,
                        "the probe's text")
    x1 = float(probe.split("x1 =")[1].split(",")[0])
    x2 = float(probe.split("x2 =")[1].split(":")[0])
    shown = float(probe.rsplit("=", 1)[1])
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = -3 * (sig(5 * x1 - 5 * x2 + 1) + sig(-5 * x1 + 5 * x2 + 1))
    assert abs(x1) < 0.1 and abs(x2) < 0.1
    assert shown == pytest.approx(expected, abs=6e-4)            # shown to 3 decimals
    assert shown == pytest.approx(-6 * sig(1.0), abs=0.02)
    # Reset leaves the example and trains again.
    ui.click(driver, "#reset")
    assert driver.execute_script("return document.body.dataset.mode;") == "train"
    assert np.isfinite(ui.test_loss(driver))
