"""``imagegen serve`` in a real browser (headless Chromium driven by selenium): sampling 4 images with
a seed gives the pixels of ``imagegen sample`` with that seed; an uploaded digit is completed (rows
and a drawn mask kept); a corrupt upload shows its one-line error; Stop ends the sampler mid-image;
Upscale and Explain draw their pictures. With ``IMAGEGEN_SCREENSHOTS=docs/images`` it also writes a
screenshot of each tab there (``serve_<tab>.png``, for the README).

Skipped, with the reason, where Chromium and its driver (Debian ``chromium``, ``chromium-driver``)
or the web extra are not installed. Never downloads a browser.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("no headless Chromium here (apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)
for _module in ("starlette", "uvicorn", "selenium"):
    pytest.importorskip(_module, reason=f'{_module} is not installed: pip install -e ".[test,web]"')

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from imagegen.cli import main  # noqa: E402
from imagegen.serve.app import create_app  # noqa: E402

from .serve_helpers import call, running  # noqa: E402

DIGIT = Path(__file__).parent / "images" / "mnist_test_0.png"
SHOTS = os.environ.get("IMAGEGEN_SCREENSHOTS")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


@pytest.fixture(scope="module")
def base():
    app = create_app(["mnist_gated_pixelcnn", "mnist_sr_gated_pixelcnn", "mnist_transformer_1d"])
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="imagegen-chromium-")
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_tab(driver, base: str, tab: str):
    driver.get(f"{base}/#{tab}")
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
    return driver.find_element(By.ID, tab)


def output(section):
    return section.find_element(By.CSS_SELECTOR, ".output")


def wait_state(section, *states: str, timeout: float = 120) -> str:
    state = lambda: output(section).get_attribute("data-state")  # noqa: E731
    WebDriverWait(section.parent, timeout).until(lambda d: state() in states)
    return state()


def fill(section, **fields) -> None:
    for name, value in fields.items():
        box = section.find_element(By.NAME, name)
        box.clear()
        box.send_keys(str(value))


def picture(section, name: str) -> tuple[np.ndarray, str]:
    """The pixels behind the download link of picture ``name``, and the link."""
    link = section.find_element(By.CSS_SELECTOR, f'.downloads a[data-picture="{name}"]')
    assert link.get_attribute("download").endswith(".png")
    url = link.get_attribute("href")
    with urllib.request.urlopen(url, timeout=30) as response:
        return np.array(Image.open(io.BytesIO(response.read()))), url


def on_pixel(driver, canvas, row: int, col: int, size: int = 28) -> ActionChains:
    """Actions that start with the pointer on pixel ``(row, col)`` of ``canvas`` (showing ``size`` x
    ``size`` pixels). The canvas is scrolled whole into view first: webdriver's offsets start at the
    centre of the part of an element in view."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    cell = canvas.size["height"] / size
    return ActionChains(driver).move_to_element_with_offset(
        canvas, round((col + 0.5 - size / 2) * cell), round((row + 0.5 - size / 2) * cell))


def shot(driver, name: str) -> None:
    """With IMAGEGEN_SCREENSHOTS, write the page as it is now to ``serve_<name>.png`` there."""
    if not SHOTS:
        return
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    page = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    (Path(SHOTS) / f"serve_{name}.png").write_bytes(base64.b64decode(page["data"]))


def test_sampling_4_images_with_a_seed_gives_the_pixels_of_imagegen_sample(browser, base, tmp_path):
    section = open_tab(browser, base, "sample")
    fill(section, num=4, seed=0)
    section.find_element(By.CSS_SELECTOR, "button.primary").click()
    assert wait_state(section, "done", "failed") == "done", output(section).text
    grid, url = picture(section, "grid")
    assert section.find_element(By.CSS_SELECTOR, ".canvas img").get_attribute("src") == url  # shown = saved
    result = CliRunner().invoke(main, ["sample", "--num", "4", "--seed", "0", "--out", tmp_path / "cli.png"])
    assert result.exit_code == 0, result.output
    cli = np.array(Image.open(tmp_path / "cli.png"))
    assert np.array_equal(grid, cli)
    for k in range(4):  # each image's own file: the grid's cell, at the model's size
        r, c = divmod(k, 2)
        cell = cli[3 * (2 + 30 * r): 3 * (30 + 30 * r): 3, 3 * (2 + 30 * c): 3 * (30 + 30 * c): 3]
        assert np.array_equal(picture(section, str(k))[0], cell)
    assert "imagegen sample --checkpoint mnist_gated_pixelcnn --num 4 --temperature 1.0 --seed 0" in \
        section.find_element(By.CSS_SELECTOR, ".command code").text
    shot(browser, "sample")


def test_an_uploaded_digit_is_completed_keeping_rows_and_a_drawn_mask(browser, base):
    section = open_tab(browser, base, "complete")
    section.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(DIGIT))
    WebDriverWait(browser, 30).until(lambda d: "Read mnist_test_0.png" in output(section).text)
    canvas = section.find_element(By.TAG_NAME, "canvas")
    cell = canvas.size["width"] / 28  # drag along row 20, columns 10 to 16 (over the stroke), a 3-pixel brush
    on_pixel(browser, canvas, 20, 10).click_and_hold().move_by_offset(round(6 * cell), 0).release().perform()
    fill(section, num=2, seed=0)
    section.find_element(By.CSS_SELECTOR, "button.primary").click()
    assert wait_state(section, "done", "failed") == "done", output(section).text
    digit = np.array(Image.open(DIGIT))
    keep = np.zeros((28, 28), dtype=bool)
    keep[:14] = True  # the slider's rows
    keep[19:22, 9:18] = True  # and the stroke drawn
    assert np.array_equal(picture(section, "mask")[0], np.where(keep, 255, 0))
    shown = picture(section, "grid")[0][3 * 2: 3 * 30: 3, 3 * 32: 3 * 60: 3]  # 2nd cell of the grid: the kept
    assert np.array_equal(shown, np.where(keep, digit, 128))
    for k in range(2):
        completion = picture(section, str(k))[0]
        assert np.array_equal(completion[keep], digit[keep]) and not np.array_equal(completion, digit)
    command = section.find_element(By.CSS_SELECTOR, ".command code").text
    assert "--mask imagegen-complete-mask.png --num 2" in command
    shot(browser, "complete")


def test_a_corrupt_upload_shows_its_error(browser, base, tmp_path):
    section = open_tab(browser, base, "complete")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    section.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(corrupt))
    error = section.find_element(By.CSS_SELECTOR, ".output .error")
    WebDriverWait(browser, 30).until(lambda d: error.is_displayed())
    assert error.text.startswith("corrupt.png: cannot read this image (")
    assert error.text.endswith("remove or replace the file") and "Traceback" not in browser.page_source


def test_stop_ends_the_sampler_mid_generation(browser, base):
    section = open_tab(browser, base, "sample")
    fill(section, num=16, seed=1)
    section.find_element(By.CSS_SELECTOR, "button.primary").click()
    image = section.find_element(By.CSS_SELECTOR, ".canvas img")
    WebDriverWait(browser, 60).until(lambda d: (image.get_attribute("src") or "").startswith("data:image"))
    if SHOTS:  # the picture for the README: part of the way down
        WebDriverWait(browser, 60).until(lambda d: "of 784" in d.page_source and int(
            section.find_element(By.CSS_SELECTOR, ".status .state").text.split()[2]) > 300)
        shot(browser, "live")
    section.find_element(By.CSS_SELECTOR, "button.stop").click()
    assert wait_state(section, "stopped", "done", "failed") == "stopped"
    status = section.find_element(By.CSS_SELECTOR, ".status .state").text
    done = int(status.removeprefix("Stopped at sub-pixel ").split()[0])
    assert 0 < done < 784 and status.endswith("of 784.")
    job = call(f"{base}/api/jobs/{output(section).get_attribute('data-job-id')}")[1]
    assert job["state"] == "stopped" and job["done"] == done  # and the sampler took no step since


def test_upscale_and_explain_draw_their_pictures(browser, base):
    section = open_tab(browser, base, "upscale")
    section.find_element(By.CSS_SELECTOR, '.digits button[data-digit="mnist_test_1"]').click()
    WebDriverWait(browser, 30).until(lambda d: "7×7 pixels" in output(section).text)
    fill(section, num=2, seed=0)
    section.find_element(By.CSS_SELECTOR, "button.primary").click()
    assert wait_state(section, "done", "failed") == "done", output(section).text
    assert picture(section, "grid")[0].shape == (3 * 32, 3 * 92)  # the input and 2 samples of 28x28 in a row
    shot(browser, "upscale")

    section = open_tab(browser, base, "explain")
    Select(section.find_element(By.NAME, "checkpoint")).select_by_value("mnist_transformer_1d")
    section.find_element(By.CSS_SELECTOR, '.digits button[data-digit="mnist_test_0"]').click()
    canvas = section.find_element(By.TAG_NAME, "canvas")
    nll = (By.CSS_SELECTOR, "figure[data-what=nll]")
    WebDriverWait(browser, 60).until(lambda d: section.find_elements(*nll))
    on_pixel(browser, canvas, 17, 14).click().perform()
    loaded = "return [...arguments[0].querySelectorAll('figure img')].filter(i => i.naturalWidth > 0).length"
    WebDriverWait(browser, 90).until(lambda d: d.execute_script(loaded, section) == 3)
    captions = [f.text for f in section.find_elements(By.CSS_SELECTOR, "figcaption")]
    assert captions[0].startswith("Bits of each sub-pixel:") and "bits/dim" in captions[0]
    assert any(c.startswith("Receptive field of row 17, column 14") for c in captions), captions
    assert any(c.startswith("Attention of row 17, column 14") for c in captions), captions
    shot(browser, "explain")
