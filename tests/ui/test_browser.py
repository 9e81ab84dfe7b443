"""The web app in a real browser: headless Chromium (the system's, driven by Playwright) against the app served on
a free localhost port with the tiny taught model. Choose a target and a method, press Unlearn, watch the progress
change, read the result table and the answers, ask both models, open the run on the Runs tab.

The page after the run is screenshotted; OBLIVIATE_SCREENSHOT=docs/images/ui.png writes it where the docs show it."""

import os
import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary on PATH (Debian: apt-get install chromium)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(beatles_model_dir, tmp_path, ui_settings):
    from obliviate.ui.app import launch
    from obliviate.ui.runner import Runner

    port = _free_port()
    runner = Runner(tmp_path / "runs", **ui_settings)
    app = launch("127.0.0.1", port, tmp_path / "runs", model=str(beatles_model_dir), runner=runner, block=False)
    yield f"http://127.0.0.1:{port}/"
    if runner.job is not None:
        runner.job.stop()
        runner.job.wait(60)
    app.close()


def _choose(page, elem_id: str, value: str) -> None:
    """Pick `value` in a Gradio dropdown (typed, then the matching option clicked)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def test_unlearn_from_the_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(app_url)
        _choose(page, "target", "beatles")
        _choose(page, "method", "ga")
        page.locator("#steps input").fill("40")
        page.locator("#lr input").fill("0.001")
        page.locator("#unlearn").click()

        # Live progress: the progress view changes while the run goes (stages, then training steps).
        progress = page.locator("#obliviate-progress")
        seen = []
        for _ in range(240):
            text = progress.inner_text()
            if not seen or seen[-1] != text:
                seen.append(text)
            if progress.get_attribute("data-status") in ("finished", "failed", "stopped"):
                break
            page.wait_for_timeout(250)
        assert progress.get_attribute("data-status") == "finished", seen[-1]
        assert len(seen) >= 3, seen
        assert any("step" in s for s in seen), seen

        # The result: the before/after table, the bar, the answers side by side.
        expect(page.locator("#results")).to_contain_text("leak_rate")
        expect(page.locator("#verdict")).to_contain_text("the bar")
        expect(page.locator("#obliviate-answers")).to_contain_text("Beatles")
        page.locator("#question textarea").fill("Which band was John Lennon in?")
        page.locator("#ask").click()
        page.wait_for_function("() => document.querySelector('#base-answer textarea').value.length > 0", timeout=30_000)
        page.wait_for_timeout(500)  # the plots settle
        shot = Path(os.environ.get("OBLIVIATE_SCREENSHOT") or tmp_path / "ui.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # An earlier run, opened on the Runs tab.
        page.get_by_role("tab", name="Runs").click()
        expect(page.locator("#runs-table")).to_contain_text("beatles-ga")
        _choose(page, "run-pick", "beatles-ga")
        page.locator("#open").click()
        expect(page.locator("#run-table")).to_contain_text("leak_rate")
        browser.close()
