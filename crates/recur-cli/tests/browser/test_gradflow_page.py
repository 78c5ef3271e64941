"""`recur gradflow --html` in a real headless browser: the chart has a line per measured curve,
the cursor moves with the keyboard and the values it shows are `recur gradflow --json`'s, a curve
can be hidden from its key, the lesson names what the numbers show; screenshots at two widths,
no console errors. The browser and the binary come from conftest.py."""

import json
import subprocess

import pytest

FLAGS = ["--seq-length", "60", "--rnn-size", "16", "--sequences", "4", "--scales", "1,4", "--gate-biases", "0,3"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, recur_bin):
    """The page, and the same measurement as JSON."""
    out = tmp_path_factory.mktemp("gradflow") / "gradflow.html"
    run = subprocess.run([recur_bin, "gradflow", *FLAGS, "--html", str(out)], check=True, capture_output=True, text=True)
    assert str(out) in run.stdout
    j = json.loads(subprocess.run([recur_bin, "gradflow", *FLAGS, "--json", "--html", str(out.with_name("again.html"))],
                                  check=True, capture_output=True, text=True).stdout)
    return out, j


def shown(page):
    """The readout: curve label -> the relative size shown, exactly as embedded."""
    rows = page.locator("#readout tr[data-label]")
    return {rows.nth(i).get_attribute("data-label"): float(rows.nth(i).locator("td[data-value]").get_attribute("data-value"))
            for i in range(rows.count())}


def test_the_cursor_reads_the_measured_curves(open_page, measured, artifacts):
    path, j = measured
    page, errors = open_page(path, 1200)
    # rnn_tanh, lstm, lstm f+3, gru, gru z+3, at two scales
    assert len(j["curves"]) == 10
    assert page.locator("#chart path.flow").count() == 10
    by_key = {}
    for c in j["curves"]:
        by_key[(c["cell"], c["scale"], c["gate_bias"])] = c["mean_rel_norm"]
    labels = shown(page)
    assert len(labels) == 10
    assert page.inner_text("#k-label") == "10"
    page.keyboard.press("End")
    assert page.inner_text("#k-label") == "60"
    at_end = shown(page)
    assert at_end["rnn_tanh"] == by_key[("rnn_tanh", 1.0, 0.0)][60]
    assert at_end["lstm f-bias +3"] == by_key[("lstm", 1.0, 3.0)][60]
    assert at_end["rnn_tanh W_hh x4"] == by_key[("rnn_tanh", 4.0, 0.0)][60]
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#k-label") == "58"
    assert shown(page)["gru z-bias +3"] == by_key[("gru", 1.0, 3.0)][58]
    page.keyboard.press("Home")
    assert all(v == 1.0 for v in shown(page).values())
    # the measured lesson: the tanh RNN vanishes at scale 1 and explodes at scale 4
    lesson = page.inner_text("#lesson")
    assert "기울기 소실" in lesson and "Exploding gradient" in lesson and "Why gates help" in lesson
    # a key hides its curve
    page.locator("#keys label.key").first.click()
    assert page.locator("#chart path.flow").first.evaluate("p => p.style.display") == "none"
    page.screenshot(path=str(artifacts / "gradflow-1200.png"), full_page=True)
    assert errors == []


def test_the_page_fits_a_phone(open_page, measured, artifacts):
    page, errors = open_page(measured[0], 390)
    page.keyboard.press("PageDown")
    assert page.inner_text("#k-label") == "0"
    page.keyboard.press("PageUp")
    assert page.inner_text("#k-label") == "10"
    page.screenshot(path=str(artifacts / "gradflow-390.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert errors == []


def test_the_page_embeds_the_json_and_needs_no_network(measured, page_data):
    path, j = measured
    html = path.read_text()
    data, text = page_data(html)
    assert [c["rel"] for c in data["curves"]] == [c["mean_rel_norm"] for c in j["curves"]]
    assert data["command"].startswith("recur gradflow --seq-length 60")
    assert "<script" not in text
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
