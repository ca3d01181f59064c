"""The studio in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real ``impasto serve``, used as a person would: upload two tiny images,
start, watch the preview change, stop it and see the final image and it in the history, paint a
region and run it to the end, open the history, run with a time budget (a bad one refused with
the run API's message, then 10s ending with stop reason "time"), and see a bad upload's error in
the page.

Screenshots of each stage are written to tests/studio/screenshots/ (or $IMPASTO_SCREENSHOTS).
Without a Chromium the test skips, unless IMPASTO_REQUIRE_BROWSER=1 (``make test`` sets it and
installs ``chromium`` first), which turns a missing browser into a failure.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import synthetic
from studio_server import studio_server  # noqa: F401  (the fixture)

SHOTS = Path(os.environ.get("IMPASTO_SCREENSHOTS") or Path(__file__).parent / "screenshots")
RUN_TIMEOUT_MS = 240_000


def chromium_path():
    for name in (os.environ.get("IMPASTO_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


@pytest.fixture
def page():
    required = os.environ.get("IMPASTO_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    exe = chromium_path()
    if exe is None:
        if required:
            pytest.fail("no Chromium found (apt-get install chromium, or set IMPASTO_CHROMIUM)")
        pytest.skip("no Chromium found (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
        yield pg
        browser.close()


def shot(page, name, full=False):
    page.screenshot(path=str(SHOTS / name), full_page=full)


def wait_end(page, state="done"):
    page.wait_for_selector(f"#run-state.{state}, #run-state.failed", timeout=RUN_TIMEOUT_MS)
    assert state in page.get_attribute("#run-state", "class"), page.inner_text("#error")


def test_the_page_in_a_browser(page, studio_server, tmp_path):  # noqa: F811
    url, data, _ = studio_server
    photo, painting, junk = tmp_path / "photo.png", tmp_path / "painting.png", tmp_path / "notes.png"
    synthetic(48, 36, seed=1).save(photo)
    synthetic(40, 40, seed=7).save(painting)
    junk.write_text("this is not an image")

    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    assert page.input_value("#opt-size") == "512"               # the config's default
    # the time budget is the config's option, a text field among the main controls
    assert [page.get_attribute(f"#main-options .field >> nth={k}", "data-name")
            for k in range(3)] == ["size", "steps", "time"]
    assert page.get_attribute("#opt-time", "type") == "text" and page.input_value("#opt-time") == ""
    assert page.inner_text(".field[data-name='style_weight'] small") == "weight of the style loss"
    page.set_input_files("#content-file", str(photo))
    page.wait_for_selector("#content-name:has-text('photo.png')")
    page.set_input_files("#style-file", str(painting))
    page.wait_for_selector(".style-item:has-text('painting.png')")
    page.fill("#opt-size", "48")
    page.fill("#opt-steps", "5000")
    page.fill("#opt-seed", "1")
    page.click("#start")

    # the preview changes while the run works, about once a second
    steps, deadline = set(), time.time() + RUN_TIMEOUT_MS / 1000
    while len(steps) < 3 and time.time() < deadline:
        step = page.get_attribute("#preview", "data-step")
        if step and page.get_attribute("#run-state", "class").endswith("running"):
            steps.add(int(step))
        time.sleep(0.3)
    assert len(steps) >= 3, steps
    assert page.inner_text("#plan").startswith("48×36 output")
    assert "estimated peak memory" in page.inner_text("#plan")
    assert page.inner_text("dd[data-stat='step']").endswith("/ 5000")
    shot(page, "01_running.png")
    # closing the page does not stop the run; opening it again shows it, curve and all
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#run-state.running")
    page.wait_for_selector("#preview[data-step]")        # (the page's CSP forbids eval)
    assert int(page.inner_text("dd[data-stat='step']").split("/")[0]) > max(steps)
    assert "photo.png" in page.inner_text("#content-name")         # and what it is made of
    assert page.input_value("#opt-steps") == "5000"
    page.click("#stop")                              # keeps the best image, as Ctrl-C does
    wait_end(page, "stopped")
    assert page.get_attribute("#preview", "src").startswith("/api/runs/")    # the final PNG
    page.wait_for_selector(".card")
    assert len(page.query_selector_all(".card")) == 1
    assert "stopped" in page.inner_text(".card")
    shot(page, "02_stopped.png", full=True)

    # paint the top half red (the painting), leave the rest as the photo
    page.click("#regions-panel summary")
    page.check("#regions-on")
    box = page.locator("#mask-overlay").bounding_box()
    page.click(".brush[data-colour='ff0000']")
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * k / 10, box["y"] + box["height"] * 0.2, steps=2)
    page.mouse.up()
    page.select_option("select[data-colour='ff0000']", label="painting.png")
    page.select_option("select[data-colour='000000']", value="")
    assert "not painted" not in page.inner_text(".region-row:has(select[data-colour='ff0000'])")
    page.fill("#opt-steps", "20")
    page.click("#start")
    wait_end(page, "done")
    page.wait_for_selector(".card:nth-child(2)")
    assert "regions (2)" in page.inner_text(".card >> nth=0")
    shot(page, "03_regions.png", full=True)

    # the history: open the newest run, its downloads and options
    page.click(".card >> nth=0 >> img")
    page.wait_for_selector("#detail[open]")
    assert page.locator("#detail a:has-text('Download PNG')").get_attribute("href").endswith("?download=1")
    assert "region #ff0000" in page.inner_text("#detail")
    shot(page, "04_history.png")
    page.click("#load-run")                                      # its options back in the controls
    assert page.input_value("#opt-steps") == "20" and page.is_checked("#regions-on")
    page.keyboard.press("Escape")

    # compare the two runs side by side
    page.check(".card >> nth=0 >> .pick")
    page.check(".card >> nth=1 >> .pick")
    page.click("#compare")
    page.wait_for_selector("#compare-dialog[open]")
    assert "steps" in page.inner_text("#compare-body")
    shot(page, "05_compare.png")
    page.keyboard.press("Escape")

    # a time budget: a bad one gets the run API's message, and marks the control
    page.uncheck("#regions-on")
    page.fill("#opt-steps", "100000")
    page.fill("#opt-time", "soon")
    page.click("#start")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error-text").startswith(
        "option --time: 'soon' is not a duration such as 30s, 2m, 1m30s or 1h")
    assert "bad" in page.get_attribute(".field[data-name='time']", "class")
    # 10s: sent as the string it is, planned to fill the budget, ended by it
    page.fill("#opt-time", "10s")
    page.click("#error-close")
    page.locator("header").scroll_into_view_if_needed()      # the page's top: the panel as first seen
    box = page.locator("#controls").bounding_box()
    page.screenshot(path=str(SHOTS / "06_time_control.png"),
                    clip={**box, "height": min(box["height"], 560)})
    with page.expect_request(lambda r: r.url.endswith("/api/runs") and r.method == "POST") as req:
        page.click("#start")
    assert req.value.post_data_json["options"]["time"] == "10s"
    t0 = time.time()
    page.wait_for_selector("#run-state.running")   # not the last run's "done" still shown
    wait_end(page, "done")
    assert time.time() - t0 < 10 * 1.3 + 3            # + the page's own polling
    assert page.get_attribute("#run-state", "data-stop") == "time"
    assert "time budget reached" in page.inner_text("#run-state")
    page.wait_for_selector(".card:nth-child(3)")
    assert page.inner_text(".card >> nth=0 >> .badge.time") == "time"
    assert "of 10s" in page.inner_text(".card >> nth=0")
    page.click(".card >> nth=0 >> img")
    page.wait_for_selector("#detail[open]")
    assert page.inner_text("#detail td[data-stop='time']") == "time budget reached"
    shot(page, "07_time_budget.png", full=True)
    page.keyboard.press("Escape")

    # a bad upload: one clear error in the page, nothing stored, the studio carries on
    uploads = sorted(p.name for p in (data / "uploads").iterdir())
    page.set_input_files("#content-file", str(junk))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image Pillow can read" in page.inner_text("#error-text")
    shot(page, "08_bad_upload.png")
    assert sorted(p.name for p in (data / "uploads").iterdir()) == uploads
    assert not [e for e in page.errors if "status of 400" not in e], page.errors
