"""The README's Python example runs as written and learns (its 32 random targets are memorised)."""

import math
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs_and_learns():
    pytest.importorskip("torch")
    text = README.read_text()
    section = text.split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert type(ns["rnn"]).__module__ == "recur.torch"
    loss = ns["loss"].item()
    assert math.isfinite(loss) and loss < 0.5 * math.log(10), loss
