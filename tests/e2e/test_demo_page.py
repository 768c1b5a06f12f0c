"""The demo page at / in a real headless Chromium (Debian's, driven by selenium) against a real
server: uploads answer as offline onnxruntime does, a drawn stroke is posted as drawn, errors
read as sentences, and a screenshot is kept as a test artifact."""

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, Server, offline_probabilities, required_tool
from training.variants import corpus, held_out

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402 - after the importorskip
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# Generous: on one shared core a cold page, a first /explain and Chromium itself are slow.
WAIT_S = 90
DIGITS = 4  # held-out digits, each in every kind below
KINDS = ("as-is", "paper", "scan", "photo")
ARTIFACTS = Path(os.environ.get("DIGITSERVE_TEST_ARTIFACTS", ROOT / "test-artifacts"))

# Records the image part of every form the page posts, as base64, before it is sent.
CAPTURE_POSTS = """
window.__posted = [];
const original = window.fetch;
window.fetch = async (url, options) => {
  if (options && options.body instanceof FormData) {
    const part = options.body.get("image");
    const bytes = new Uint8Array(await part.arrayBuffer());
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    window.__posted.push({url: String(url), name: part.name, type: part.type, data: btoa(text)});
  }
  return original(url, options);
};
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium = required_tool("chromium", "chromium")
    driver_path = required_tool("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        # Without these Chromium dials out at start (updates, sync), which the closed network
        # here refuses, many times over.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = webdriver.Chrome(
        service=Service(executable_path=driver_path, log_output=str(log)), options=options
    )
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: WebDriver, server: Server) -> None:
    browser.get(f"{server.url}/")
    # The model list is filled from /models: the page is ready once it is.
    wait(browser).until(lambda d: d.find_element(By.ID, "model").get_attribute("value"))
    browser.execute_script(CAPTURE_POSTS)


def wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, WAIT_S)


def element(browser: WebDriver, id_: str) -> WebElement:
    return browser.find_element(By.ID, id_)


def predict(browser: WebDriver) -> tuple[str, str]:
    """Press Predict and wait for the answer or the error: (top label, message)."""
    element(browser, "predict").click()  # clears the label before its first await
    wait(browser).until(lambda d: element(d, "top-label").text or element(d, "message").text)
    wait(browser).until(lambda d: element(d, "predict").is_enabled())
    return element(browser, "top-label").text, element(browser, "message").text


def screenshot(browser: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    print(f"\nscreenshot: {path}")
    return path


def posted(browser: WebDriver) -> list[dict[str, str]]:
    return list(browser.execute_script("return window.__posted;"))


def test_uploaded_digits_answer_as_offline_onnxruntime(
    browser: WebDriver, server: Server, tmp_path: Path
) -> None:
    images, labels = held_out()
    open_page(browser, server)
    assert element(browser, "model").get_attribute("value") == "mnist-cnn"
    assert element(browser, "top-label").text == ""
    checked = []
    for variant in corpus(images[:DIGITS], labels[:DIGITS], KINDS):
        path = tmp_path / f"{variant.kind}-{variant.index}{variant.suffix}"
        path.write_bytes(variant.data)
        expected = str(offline_probabilities("mnist-cnn", [variant.data])[0].argmax())
        element(browser, "file").send_keys(str(path))
        label, message = predict(browser)
        assert message == "", (path.name, message)
        assert label == expected, f"{path.name}: the page shows {label}, offline says {expected}"
        assert base64.b64decode(posted(browser)[-1]["data"]) == variant.data  # the file's bytes
        checked.append(path.name)
    assert len(checked) == DIGITS * len(KINDS)
    pictures = element(browser, "explain").find_elements(By.TAG_NAME, "img")
    assert len(pictures) == 2 + 2 + 1  # input, occlusion, two conv blocks, filters
    assert all(img.get_attribute("alt") for img in pictures)
    screenshot(browser, "demo.png")  # the README's docs/demo.png: a photographed digit


def draw(browser: WebDriver, strokes: list[list[tuple[int, int]]]) -> None:
    """Each stroke: pointer down at its first point (offsets from the canvas's centre, in CSS
    pixels), moved through the others, released."""
    canvas = element(browser, "draw")
    for stroke in strokes:
        (x0, y0), *rest = stroke
        actions = ActionChains(browser).move_to_element_with_offset(canvas, x0, y0)
        actions.click_and_hold()
        x, y = x0, y0
        for nx, ny in rest:
            actions.move_by_offset(nx - x, ny - y)
            x, y = nx, ny
        actions.release().perform()


def ink_box(png: bytes) -> tuple[int, int, int, int]:
    """The bounding box (left, top, right, bottom) of the dark pixels of a posted drawing."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        grey = np.asarray(image.convert("L"))
    ys, xs = np.nonzero(grey < 128)
    assert len(xs), "the posted drawing has no ink"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_a_drawn_stroke_is_posted_as_drawn_and_answered(browser: WebDriver, server: Server) -> None:
    open_page(browser, server)
    draw(browser, [[(0, y) for y in range(-90, 91, 15)]])  # a vertical stroke down the middle
    label, message = predict(browser)
    assert message == "" and label != "", message
    (sent,) = posted(browser)
    assert sent["url"].endswith("/explain") and sent["type"] == "image/png"
    png = base64.b64decode(sent["data"])
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (280, 280)  # the canvas's own pixels, not the screen's
    left, top, right, bottom = ink_box(png)
    assert bottom - top >= 160, (left, top, right, bottom)  # drawn 180 px long ...
    assert right - left <= 40, (left, top, right, bottom)  # ... and one stroke wide
    assert abs((left + right) / 2 - 140) <= 6  # down the middle, where it was drawn
    assert abs((top + bottom) / 2 - 140) <= 6


def test_a_drawn_seven_reads_seven_and_the_page_is_screenshotted(
    browser: WebDriver, server: Server
) -> None:
    open_page(browser, server)
    top_bar = [(x, -80) for x in range(-70, 71, 14)]
    stem = [(70 - 9 * i, -80 + 18 * i) for i in range(11)]  # down and to the left
    draw(browser, [top_bar, stem])
    label, message = predict(browser)
    assert (label, message) == ("7", "")
    bars = element(browser, "bars").find_elements(By.TAG_NAME, "li")
    assert len(bars) == 3 and bars[0].text.startswith("7")
    path = screenshot(browser, "demo-drawn.png")
    with Image.open(path) as shot:
        assert shot.size[0] >= 1000  # the whole window, pictures included


def test_a_blank_canvas_says_there_is_no_ink(browser: WebDriver, server: Server) -> None:
    open_page(browser, server)
    label, message = predict(browser)
    assert label == ""
    assert "no ink" in message.lower(), message
    assert not message.lstrip().startswith("{")  # a sentence, not the JSON body


def test_a_file_that_is_no_image_says_so(
    browser: WebDriver, server: Server, tmp_path: Path
) -> None:
    open_page(browser, server)
    fake = tmp_path / "notes.png"
    fake.write_text("a shopping list, not a picture\n")
    element(browser, "file").send_keys(str(fake))
    label, message = predict(browser)
    assert label == ""
    assert "not an image" in message, message
    assert "PNG, JPEG" in message and not message.startswith("{")
    element(browser, "clear").click()  # back to drawing: the message and the file go
    assert element(browser, "message").text == ""


def test_the_page_is_labelled_for_keyboard_and_screen_reader_users(
    browser: WebDriver, server: Server
) -> None:
    open_page(browser, server)
    for id_ in ("file", "model"):
        assert browser.find_elements(By.CSS_SELECTOR, f"label[for='{id_}']"), id_
    assert element(browser, "draw").get_attribute("aria-label")
    assert element(browser, "message").get_attribute("role") == "alert"
    # Predict is a real button: reachable by Tab and pressed with Enter.
    element(browser, "predict").send_keys("\n")
    wait(browser).until(lambda d: element(d, "message").text)
    assert "no ink" in element(browser, "message").text.lower()


def test_the_pages_assets_and_the_openapi_page_are_served_offline(server: Server) -> None:
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="draw"' in page.text and "http" not in page.text.split("<body>")[0]
    script = httpx.get(f"{server.url}/demo/demo.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server.url}/demo/demo.css", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/demo/../bento.py", timeout=10).status_code == 404
    docs = httpx.get(f"{server.url}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert "googletagmanager" not in docs.text and "https://" not in docs.text
    bundle = httpx.get(f"{server.url}/static_content/swagger-ui-bundle.js", timeout=10)
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    spec = httpx.get(f"{server.url}/docs.json", timeout=10).json()
    assert "/explain" in spec["paths"] and "/" not in spec["paths"]


def test_docs_demo_png_is_kept_up_to_date_by_hand() -> None:
    """docs/demo.png is the screenshot this file writes (test-artifacts/demo.png), copied by
    hand after looking at it; it must exist and be a readable size."""
    shot = ROOT / "docs" / "demo.png"
    assert shot.exists(), "copy test-artifacts/demo.png to docs/demo.png"
    with Image.open(shot) as image:
        assert image.size[0] >= 1000 and image.size[1] >= 600
