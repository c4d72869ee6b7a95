"""The search page of ``fastdpr serve`` in a real headless browser (Debian's chromium, driven by playwright).

Browsers cannot be downloaded here: the system's ``/usr/bin/chromium`` is used (``.ci/run`` installs it).
Without it the test skips locally and fails in CI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from requires import unavailable
from serve_helpers import ServerProcess, require_module, require_serve

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HEADER_RGB = (0x1F, 0x3A, 0x5F)  # the page header's background
MARK_RGB = (0xFF, 0xE0, 0x66)  # a highlighted answer span


def system_chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        unavailable("no system chromium (apt-get install -y chromium)")
    return path


def test_search_page_shows_ranked_passages_and_highlights_answers(tiny_index: Path, tmp_path: Path) -> None:
    require_serve()
    require_module("playwright", "dev")
    require_module("PIL", "dev")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    chromium = system_chromium()
    with ServerProcess(tiny_index, "--threads", 1) as server, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 900})
        try:
            page = context.new_page()
            page.goto(server.url + "/")
            page.fill("#question", "how does the try statement handle exceptions?")
            page.fill("#k", "5")
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-state=results]", timeout=30_000)
            hits = page.locator("li.hit")
            assert hits.count() == 5
            ranks = [hits.nth(i).locator(".rank").inner_text() for i in range(5)]
            assert ranks == ["1.", "2.", "3.", "4.", "5."]
            scores = [float(hits.nth(i).locator(".score").inner_text()) for i in range(5)]
            assert scores == sorted(scores, reverse=True)
            assert all(hits.nth(i).locator(".title").inner_text().strip() for i in range(5))
            assert page.inner_text("#status").startswith("5 passages in ")
            # Typing an answer highlights it in the passages without searching again.
            page.fill("#answer", "the")
            marks = page.locator("#hits mark")
            assert marks.count() > 0
            assert {marks.nth(i).inner_text().lower() for i in range(marks.count())} == {"the"}
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=False)
        finally:
            context.close()
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 900)
    pixels = list(image.getdata())
    assert len(set(pixels)) > 50, "the screenshot is (nearly) blank"
    assert image.getpixel((5, 5)) == HEADER_RGB
    assert sum(1 for p in pixels if p == MARK_RGB) > 20, "no highlighted answer span is visible"
    non_white = sum(1 for p in pixels if p != (255, 255, 255) and p != (0xF6, 0xF7, 0xF9))
    assert non_white > 0.05 * len(pixels)
