"""The run report in a real browser: Debian's Chromium, headless, driven by Playwright.

report.html promises to be self-contained (inline CSS, figures as base64 data: URIs), so it is opened from
disk with every http(s) request blocked; the test then checks that every figure decodes, takes a full-page
screenshot and looks for the report's sections. Chromium comes from `make browser` (apt-get, as root), never
from `playwright install`. Where it is missing the test fails saying so; ALIGNKIT_SKIP_BROWSER=1 skips it.

    ALIGNKIT_SKIP_BROWSER=1 make test     # a machine without root: everything but this file
"""

import os
import struct
from pathlib import Path

import pytest

VIEWPORT = {"width": 1280, "height": 800}
# The report's h2 headings, each matched case-insensitively as a substring of some h2 (alignkit/eval/report.py).
SECTIONS = ["Comparison", "Win rate", "frontier", "Overoptimisation", "reward model", "Training curves", "Samples"]

# Every <img> once it has loaded or failed: a lazy one is switched to eager first, so images below the fold
# count too. decode() rejects for a broken image; `complete` and `naturalWidth` then tell.
IMAGES_JS = """async () => Promise.all([...document.images].map(async (img) => {
    img.loading = "eager";
    try { await img.decode(); } catch (e) {}
    return {src: (img.getAttribute("src") || "").slice(0, 48), complete: img.complete, width: img.naturalWidth};
}))"""

pytestmark = pytest.mark.skipif(os.environ.get("ALIGNKIT_SKIP_BROWSER") == "1",
                                reason="ALIGNKIT_SKIP_BROWSER=1: the report is not opened in Chromium")
# the `open_offline` fixture (Debian's Chromium under Playwright) is in tests/conftest.py


def broken(images: list[dict]) -> list[str]:
    return [i["src"] for i in images if not (i["complete"] and i["width"] > 0)]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_renders_in_a_browser(open_offline, smoke_run, tmp_path):
    report = smoke_run / "report.html"
    assert report.is_file(), f"{report} was not written (alignkit.eval.report.write_report, end of `alignkit run`)"
    page, aborted, _ = open_offline(report.as_uri(), viewport=VIEWPORT)
    images = page.evaluate(IMAGES_JS)
    shot = tmp_path / "report.png"  # taken before any check fails, to look at when one does
    page.screenshot(path=shot, full_page=True)

    # (a) figures: at least one, every one decoded, embedded, and nothing fetched from the network
    assert images, "report.html has no <img>"
    assert not broken(images), f"images missing or broken in {report}: {broken(images)}"
    assert all(i["src"].startswith("data:image/") for i in images), [i["src"] for i in images]
    assert not aborted, f"report.html is not self-contained: it asked for {aborted}"
    # (b) the full-page screenshot: the whole document at the viewport's width, and not a blank page
    width, height = png_size(shot)
    assert (width, height) == (VIEWPORT["width"], page.evaluate("document.documentElement.scrollHeight"))
    assert height > VIEWPORT["height"], f"{shot}: a report with {len(images)} figures is only {height} px tall"
    assert shot.stat().st_size > 20_000, f"{shot} is {shot.stat().st_size} bytes: a near-empty page?"
    # (c) the sections
    headings = [h.lower() for h in page.locator("h2").all_inner_texts()]
    missing = [s for s in SECTIONS if not any(s.lower() in h for h in headings)]
    assert not missing, f"report.html has no h2 for {missing}; its h2 headings: {headings}"


# A 1×1 PNG (one blue pixel): the smallest image that decodes.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mOQL9/yHwAETQJKzB21+gAAAABJRU5ErkJggg=="


def test_the_checks_see_broken_lazy_and_remote_images(open_offline, tmp_path):
    """The checks above are not vacuous: a missing file and a remote URL count as broken (and the remote
    one as a request, which is aborted), a lazy image below the fold as loaded."""
    page_file = tmp_path / "page.html"
    page_file.write_text(f"""<!doctype html><html><body><h2>Win rate</h2>
<img src="data:image/png;base64,{PIXEL}"><img src="missing.png"><img src="http://127.0.0.1:9/remote.png">
<div style="height:5000px"></div><img loading="lazy" src="data:image/png;base64,{PIXEL}"></body></html>""")
    page, aborted, _ = open_offline(page_file.as_uri(), viewport=VIEWPORT)
    images = page.evaluate(IMAGES_JS)
    assert [i["width"] for i in images] == [1, 0, 0, 1]
    assert broken(images) == ["missing.png", "http://127.0.0.1:9/remote.png"]
    assert aborted == ["http://127.0.0.1:9/remote.png"]
