"""The app in a real browser: Debian's chromium driven by Playwright, against app.py on loopback.

Every tab is used as a person would (drag, click, upload) and a screenshot of each is saved
under the test's temporary folder. Skipped only where chromium is missing outside CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("chromium is not installed; .ci/run installs it with apt-get")
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def page(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(120_000)  # generous: CI machines are shared and slow
        page.goto(app_url)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def image_src(page, elem_id: str) -> str:
    locator = page.locator(f"#{elem_id} img").first
    locator.wait_for(state="visible")
    return locator.get_attribute("src")


def wait_for_new_src(page, elem_id: str, old: str) -> str:
    page.wait_for_function(
        "([id, old]) => { const i = document.querySelector(`#${id} img`); return i && i.src && i.src !== old; }",
        arg=[elem_id, old],
    )
    return image_src(page, elem_id)


def drag_slider(page, elem_id: str, fraction: float) -> None:
    """Press on the slider's range input, move the mouse in steps, release: a real drag."""
    track = page.locator(f"#{elem_id} input[type=range]")
    box = track.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(box["x"] + 2 + (box["width"] - 4) * fraction * i / 10, y)
    page.mouse.up()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_showcase_slider_drag_changes_the_face(page, shots):
    before = image_src(page, "showcase-image")
    drag_slider(page, "showcase-slider", 1.0)
    after = wait_for_new_src(page, "showcase-image", before)
    assert after != before
    assert float(page.locator("#showcase-slider input[type=number]").input_value()) > 0.9
    page.screenshot(path=shots / "showcase.png", full_page=True)
    assert (shots / "showcase.png").stat().st_size > 10_000


def test_sample_random_seed_gives_new_faces(page, shots):
    open_tab(page, "Sample")
    before = image_src(page, "sample-gallery")
    page.locator("#random-seed").click()
    wait_for_new_src(page, "sample-gallery", before)
    assert page.locator("#sample-gallery img").count() >= 16
    page.screenshot(path=shots / "sample.png", full_page=True)


def test_reconstruct_an_uploaded_photo(page, shots):
    open_tab(page, "Reconstruct")
    page.locator("#recon-upload input[type=file]").set_input_files(str(ROOT / "assets/examples/Laura_Bush_0037.jpg"))
    page.wait_for_function("() => document.querySelector('#recon-note').innerText.includes('PSNR')")
    assert "Face found" in page.locator("#recon-note").inner_text()
    image_src(page, "recon-image")
    page.screenshot(path=shots / "reconstruct.png", full_page=True)


def test_interpolate_slider(page, shots):
    open_tab(page, "Interpolate")
    before = image_src(page, "path-image")
    drag_slider(page, "path-slider", 0.1)
    wait_for_new_src(page, "path-image", before)
    page.screenshot(path=shots / "interpolate.png", full_page=True)


def test_attribute_arithmetic(page, shots):
    open_tab(page, "Attribute arithmetic")
    before = image_src(page, "combined-image")
    page.locator("#group-a label").last.click()  # add one more face to group A
    page.locator("#combine-button").click()
    wait_for_new_src(page, "combined-image", before)
    page.screenshot(path=shots / "arithmetic.png", full_page=True)


def test_just_enough_glasses_moves_the_glasses_slider_and_draws_them(page, shots):
    open_tab(page, "Attribute arithmetic")
    before = image_src(page, "edited-image")
    page.locator("#own-strength").click()
    wait_for_new_src(page, "edited-image", before)
    assert float(page.locator("#edit-Eyeglasses input[type=number]").input_value()) >= 1
    assert page.locator("#keep-sex input[type=checkbox]").is_checked()
    page.screenshot(path=shots / "just_enough_glasses.png", full_page=True)


def test_about_names_the_weights(page, shots):
    open_tab(page, "About")
    text = page.locator("#about").inner_text()
    assert "bundled model" in text and "PSNR" in text
    page.screenshot(path=shots / "about.png", full_page=True)
