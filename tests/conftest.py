import os
import re

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Tiny test models are faster on one thread than on two competing ones.
torch.set_num_threads(1)


# Debian's Chromium, headless, driven by Playwright (the report's and the arena's browser tests). `make browser`
# installs it with apt-get; never `playwright install`. ALIGNKIT_SKIP_BROWSER=1 skips the tests that use it.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium with apt-get (as root); "
                    "on a machine where that is impossible, ALIGNKIT_SKIP_BROWSER=1 skips this test", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]' (make test does)", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def open_offline(browser):
    """``open_offline(url, allow=None, viewport=...)`` → (page, aborted URLs, page errors): ``url`` loaded in a fresh
    browser context where every http(s) / ws(s) request is aborted and recorded, except those starting with
    ``allow`` (the server under test); page errors (uncaught exceptions) are collected from the start."""
    contexts = []

    def open_url(url: str, allow: str | None = None, viewport: dict | None = None):
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
        contexts.append(context)
        aborted: list[str] = []

        def abort(route):
            aborted.append(route.request.url)
            route.abort()

        keep = rf"(?!{re.escape(allow)})" if allow else ""
        context.route(re.compile(rf"^{keep}(https?|wss?)://"), abort)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, wait_until="load")
        return page, aborted, errors

    yield open_url
    for context in contexts:
        context.close()
