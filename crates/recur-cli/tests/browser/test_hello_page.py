"""`recur hello --html` in a real headless browser (Debian's chromium, driven by Playwright):
step forward and back with the keyboard and read the numbers at t = 2 against the seed's,
move the epoch slider to its end and read "ello", screenshots at two widths, no console errors.

The browser and the binary come from conftest.py."""

import json
import subprocess

import pytest

# The seed's numbers at t = 2 (shared/seed/worked-example.md, 4 decimals; it rounds
# intermediates, so within 2e-4 of full precision).
SEED_T2 = {
    "fwd-hw": [0.8176, 0.5368, 0.9591],
    "fwd-h": [0.8350, 0.8964, 0.8791],
    "fwd-o": [0.4056, 1.8696, 0.7877, 1.8910],
    "fwd-p": [0.0892, 0.3858, 0.1308, 0.3942],
}
SEED_T1 = {"fwd-xw": [0.2973, 0.2766, 0.7974]}
SEED_TOL = 2e-4


@pytest.fixture(scope="module")
def page_file(tmp_path_factory, recur_bin):
    out = tmp_path_factory.mktemp("page") / "hello.html"
    subprocess.run([recur_bin, "hello", "--html", str(out)], check=True, capture_output=True)
    return out


def values(page, id_):
    return [float(v) for v in page.get_attribute(f"#{id_}", "data-values").split(",")]


def close(got, want, what):
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        assert abs(g - w) <= SEED_TOL, f"{what}: page shows {got}, the seed {want}"


def test_keyboard_steps_show_the_seeds_numbers(open_page, page_file, artifacts):
    page, errors = open_page(page_file, 1200)
    assert "t = 1 of 4" in page.inner_text("#where")
    for k, v in SEED_T1.items():
        close(values(page, k), v, f"t = 1 {k}")
    page.keyboard.press("ArrowRight")
    assert "forward, t = 2 of 4" in page.inner_text("#where")
    for k, v in SEED_T2.items():
        close(values(page, k), v, f"t = 2 {k}")
    assert "wrong" in page.inner_text("#fwd-pred") and "'o'" in page.inner_text("#fwd-pred")
    # the graph marks the step being computed
    assert page.get_attribute("#graph .col.active", "data-t") == "2"
    page.keyboard.press("ArrowLeft")
    assert "forward, t = 1 of 4" in page.inner_text("#where")
    # on through the forward steps into BPTT, which runs t = 4 back to 1
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    assert "BPTT, t = 4" in page.inner_text("#where")
    assert values(page, "bwd-dhnext") == [0.0, 0.0, 0.0]
    carried = values(page, "bwd-dhprev")
    page.keyboard.press("ArrowRight")
    assert "BPTT, t = 3" in page.inner_text("#where")
    assert values(page, "bwd-dhnext") == carried, "what t = 4 passes back is what t = 3 receives"
    page.screenshot(path=str(artifacts / "hello-1200.png"), full_page=True)
    assert errors == []


def test_the_last_epoch_predicts_ello(open_page, page_file, artifacts):
    page, errors = open_page(page_file, 390)
    assert page.get_attribute("#epoch-preds", "data-preds") == "eooo"
    last = page.get_attribute("#epoch", "max")
    page.fill("#epoch", last)
    page.dispatch_event("#epoch", "input")
    assert page.get_attribute("#epoch-preds", "data-preds") == "ello"
    assert "ello" in page.inner_text("#epoch-label")
    # the gradient-flow chart: the five measured curves
    assert page.locator("#flow path.flow").count() == 5
    page.screenshot(path=str(artifacts / "hello-390.png"), full_page=True)
    # the page's width follows the phone's: nothing wider than the viewport
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert errors == []


def test_the_page_embeds_recur_hello_json(page_file, recur_bin, page_data):
    """Every forward number on the page is `recur hello --json`'s."""
    j = json.loads(subprocess.run([recur_bin, "hello", "--json"], check=True, capture_output=True, text=True).stdout)
    html = page_file.read_text()
    data, text = page_data(html)
    assert data["steps"] == j["steps"]
    assert data["training"]["snapshots"][-1]["preds"] == j["trained"]["preds"] == "ello"
    assert "<script" not in text
    # the lesson the chart shows, as measured: after 100 steps the tanh RNN's gradient is gone,
    # an LSTM with its forget gate opened (bias 3) keeps a sizeable part of it
    flow = {(c["cell"], c["gate_bias"]): c["rel"] for c in data["gradflow"]}
    assert len(flow[("rnn_tanh", 0.0)]) == 101
    assert flow[("rnn_tanh", 0.0)][100] < 1e-15
    assert flow[("lstm", 3.0)][100] > 1e-3 and flow[("gru", 3.0)][100] > 1e-3
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
