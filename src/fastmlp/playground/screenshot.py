"""Drive the playground page in headless Chromium: the README's screenshot and the browser tests.

Usage::

    python -m fastmlp.playground.screenshot docs/playground.png

starts a playground server on 127.0.0.1, opens the page in headless Chromium, chooses the
spiral with tanh and two hidden layers of 8 (inputs x1, x2, sin x1, sin x2, learning rate 0.1)
through the page's own controls, presses play, waits until the test loss is below 0.05 (at
most two minutes) and saves a screenshot of the window.

It needs Selenium (``pip install selenium``, in the ``test`` extra) and Debian's ``chromium``
and ``chromium-driver`` packages. Selenium is pointed at ``CHROMEDRIVER`` and ``CHROMIUM``
explicitly, so it never downloads a driver or a browser.
"""
import argparse
import contextlib
import os
import shutil
import sys
import threading
import time

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
WINDOW = (1400, 1000)


def unavailable():
    """Why the browser cannot be driven here (a sentence), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path, package in ((CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package})"
    return None


@contextlib.contextmanager
def chrome(size=WINDOW):
    """A headless Chromium driven by Selenium through the system's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, for the tests
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={size[0]},{size[1]}", "--hide-scrollbars",
                "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def running_server(**kwargs):
    """A PlaygroundServer on 127.0.0.1 and a free port, served from a thread."""
    from fastmlp.playground.server import PlaygroundServer

    server = PlaygroundServer("127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)


# ---------------------------------------------------------------- acting on the page

def wait_for(driver, condition, timeout=30.0, what="the page"):
    """Poll condition(driver) until it is true; TimeoutError naming ``what`` after timeout."""
    end = time.monotonic() + timeout
    while True:
        value = condition(driver)
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.05)


def idle(driver, timeout=30.0):
    """Wait until the page has no settings request in flight and has drawn a snapshot."""
    wait_for(driver, lambda d: d.execute_script(
        "return document.body.dataset.version !== undefined && "
        "(document.body.dataset.busy || '0') === '0';"), timeout, "an idle page")


def open_page(driver, url):
    driver.get(url)
    idle(driver)


def select(driver, element_id, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_visible_text(text)
    idle(driver)


def click(driver, css):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()
    idle(driver)


def hidden_widths(driver):
    from selenium.webdriver.common.by import By

    return [len(driver.find_elements(By.CSS_SELECTOR, f'.neuron[data-col="{c}"]'))
            for c in range(1, int(driver.find_element(By.ID, "n-layers").text) + 1)]


def set_hidden(driver, widths):
    """Set the hidden layers with the page's - / + buttons."""
    from selenium.webdriver.common.by import By

    while int(driver.find_element(By.ID, "n-layers").text) > len(widths):
        click(driver, "#remove-layer")
    while int(driver.find_element(By.ID, "n-layers").text) < len(widths):
        click(driver, "#add-layer")
    for h, want in enumerate(widths):
        while hidden_widths(driver)[h] != want:
            sign = "plus" if hidden_widths(driver)[h] < want else "minus"
            click(driver, f'.units-{sign}[data-layer="{h}"]')


def set_features(driver, names):
    """Use exactly these inputs, clicking the input neurons that differ."""
    from selenium.webdriver.common.by import By

    from fastmlp.playground.session import FEATURES

    for feature in FEATURES:
        css = f'.neuron.input[data-feature="{feature}"]'
        on = "off" not in driver.find_element(By.CSS_SELECTOR, css).get_attribute("class")
        if on != (feature in names):
            click(driver, css)


def test_loss(driver):
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.ID, "test-loss").text
    try:
        return float(text)
    except ValueError:
        return float("nan")


def setup_spiral(driver):
    """Spiral, tanh, two hidden layers of 8, inputs x1 x2 sin x1 sin x2, rate 0.1."""
    select(driver, "dataset", "spiral")
    select(driver, "activation", "tanh")
    select(driver, "lr", "0.1")
    set_hidden(driver, [8, 8])
    set_features(driver, ["x1", "x2", "sin x1", "sin x2"])


def train_until(driver, threshold, timeout=120.0):
    """Press play, wait until the displayed test loss is below threshold, press pause."""
    click(driver, "#play")
    wait_for(driver, lambda d: test_loss(d) < threshold, timeout,
             f"a test loss below {threshold}")
    click(driver, "#play")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastmlp.playground.screenshot",
                                     description="Screenshot of the playground after "
                                     "training the spiral (see the module's notes).")
    parser.add_argument("out", help="the PNG file to write")
    parser.add_argument("--loss", type=float, default=0.05,
                        help="train until the test loss is below this (default: 0.05)")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"screenshot: {reason}", file=sys.stderr)
        return 2
    with running_server() as server, chrome() as driver:
        open_page(driver, server.url)
        setup_spiral(driver)
        train_until(driver, args.loss)
        time.sleep(0.5)
        tmp = args.out + ".part.png"
        driver.save_screenshot(tmp)
        shutil.move(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
