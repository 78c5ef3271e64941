"""What the page tests share: the recur binary, one headless chromium (Debian's, driven by
Playwright) for the module, a page opened at a given width with its console errors collected,
and the JSON a page embeds.

Needs the release binary (target/release/recur, or RECUR_BIN), chromium (CHROMIUM, default
/usr/bin/chromium) and the playwright package; `.ci/run` provides all three."""

import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[4]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "target" / "browser-artifacts"
DATA_TAG = '<script id="data" type="application/json">'


@pytest.fixture(scope="session")
def recur_bin():
    path = pathlib.Path(os.environ.get("RECUR_BIN", ROOT / "target" / "release" / "recur"))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build --release -p recur-cli`")
    return str(path)


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        yield b
        b.close()


@pytest.fixture
def open_page(browser):
    """open_page(file, width) -> (page, errors): the page loaded at that viewport width, and the
    list its console errors and uncaught exceptions go to."""

    def open_(page_file, width):
        page = browser.new_page(viewport={"width": width, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        return page, errors

    return open_


def embedded(html):
    """The JSON a page embeds, and the text it sits in."""
    start = html.index(DATA_TAG) + len(DATA_TAG)
    text = html[start : html.index("</script>", start)]
    return json.loads(text), text


@pytest.fixture
def page_data():
    return embedded
