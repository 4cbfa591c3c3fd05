"""The page in a real browser: Debian's headless Chromium driven by Playwright, against
`mmsearch ui` and the real Triton of `ui_server`. Screenshots land in the test's temp dir."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mmsearch.processes import free_port, stop_process_group
from mmsearch.ui import page_is_up

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ENSURE_PACKAGES = Path(__file__).parents[2] / "scripts" / "ensure-debian-packages.sh"
# Headless as root, and quiet on a closed network (no background fetches to Google).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDE, NARROW = (1280, 800), (400, 800)
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():  # `make test` installs it first; a bare `pytest` run gets it here
        subprocess.run(["bash", str(ENSURE_PACKAGES), f"chromium={CHROMIUM}"], check=False)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing and could not be installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_url(ui_server, tmp_path_factory):
    """`mmsearch ui` as a user starts it, stopped at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "mmsearch-ui.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mmsearch"), "ui", "--url", ui_server["url"], "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for _ in range(300):
            if page_is_up(port) or process.poll() is not None:
                break
            time.sleep(0.2)
        assert page_is_up(port), f"mmsearch ui did not come up:\n{log.read_text()[-2000:]}"
        yield f"http://localhost:{port}"
    finally:
        stop_process_group(process, 30)


def open_page(browser, url, viewport):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("textbox", name="Query").wait_for()
    return page


def search(page, query: str) -> None:
    """Type and press Enter once the page is idle and shows the text as an edit ("Press Enter to
    apply"): an Enter that beats either can be lost, and the page then waits for a query."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()
    box = page.get_by_role("textbox", name="Query")
    box.fill(query)
    page.get_by_test_id("InputInstructions").filter(has_text="Press Enter to apply").wait_for()
    box.press("Enter")


def shows(locator) -> None:
    """Wait for `locator`; if it never comes, fail with what the page shows instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.wait_for()
    except PlaywrightTimeout:
        pytest.fail(f"the page never showed {locator}; it shows:\n{locator.page.inner_text('body')[:3000]}")


def screenshot(page, path: Path, viewport) -> Path:
    page.screenshot(path=str(path))
    with Image.open(path) as image:
        assert image.size == viewport
    print(f"\nscreenshot: {path}")
    return path


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280x800", "400x800"])
def test_a_query_shows_the_expected_top_hit(browser, page_url, ui_server, viewport, tmp_path):
    page = open_page(browser, page_url, viewport)
    search(page, ui_server["query"])
    top_id, top_title = ui_server["top_hit"]
    shows(page.get_by_text(f"1. {top_title}", exact=True))
    shows(page.get_by_text(f"id {top_id}", exact=False).first)
    query_box = page.get_by_role("textbox", name="Query").bounding_box()
    collection = page.get_by_text("Collection", exact=True).bounding_box()
    if viewport == WIDE:  # query, collection and top-k share a row; the sidebar is open
        assert (
            collection["y"] < query_box["y"] + query_box["height"]
            and collection["x"] > query_box["x"] + query_box["width"]
        )
        assert page.get_by_text("Triton ready at").is_visible()
    else:  # one column: the collection picker sits under the query box, the sidebar is folded away
        assert collection["y"] > query_box["y"] + query_box["height"]
        assert not page.get_by_text("Triton ready at").is_visible()
    screenshot(page, tmp_path / f"text-search-{viewport[0]}x{viewport[1]}.png", viewport)
    page.close()


def test_chinese_results_render(browser, page_url, ui_server, tmp_path):
    """Chinese titles and snippets reach the browser as text (the screenshot shows the glyphs:
    `make test` installs a CJK font, fonts-wqy-microhei, for this headless chromium)."""
    from mmsearch.client.search_client import SearchClient

    collection, query = ui_server["zh_collection"], "如何升级我的 Debian 系统？"
    top = SearchClient(ui_server["url"]).search(query, collection, 1)["hits"][0]["document"]
    page = open_page(browser, page_url, WIDE)
    page.get_by_test_id("stSelectbox").filter(has_text="Collection").click()
    page.get_by_role("option", name=f"{collection} (text, 147)").click()
    search(page, query)
    shows(page.get_by_text(f"1. {top['question']}", exact=True))
    shows(page.get_by_text(top["answer"][:40], exact=False).first)
    screenshot(page, tmp_path / "chinese-search-1280x800.png", WIDE)
    page.close()


def test_image_search_grid_and_upload(browser, page_url, ui_server, tmp_path):
    page = open_page(browser, page_url, WIDE)
    page.get_by_test_id("stSelectbox").filter(has_text="Collection").click()
    page.get_by_role("option", name="photos (image, 16)").click()
    search(page, "a cat")
    shows(page.get_by_text("10 hits for “a cat” in photos"))
    shows(page.get_by_text("10. ").first)
    assert page.locator("[data-testid=stMain] img").count() == 10
    screenshot(page, tmp_path / "image-search-1280x800.png", WIDE)
    page.locator("input[type=file]").set_input_files(str(ui_server["photos"] / "astronaut.png"))
    shows(page.get_by_text("1. astronaut.png · 1.000"))
    screenshot(page, tmp_path / "image-to-image-1280x800.png", WIDE)
    page.close()
