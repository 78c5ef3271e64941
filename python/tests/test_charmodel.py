"""recur.CharModel gives the command line's numbers: `loss` equals `recur eval --json`'s
loss_nats and `sample` the text `recur sample` prints, in float32, bf16 and int8."""

import json
import os
import pathlib
import subprocess

import pytest

import recur

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "recur" / "tests" / "fixtures"
MODELS = ["char_gru_onehot.ckpt.safetensors", "char_lstm_emb.ckpt.safetensors", "char_lstm_tied.ckpt.safetensors"]
TEXT = "the quick brown fox jumps over the lazy dog.\nhello, world! " * 40


def recur_bin():
    path = pathlib.Path(os.environ.get("RECUR_BIN", ROOT / "target" / "release" / "recur"))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build --release -p recur-cli` (or set RECUR_BIN)")
    return str(path)


def cli(*args):
    out = subprocess.run([recur_bin(), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The fixture models, and an int8 copy of each made by `recur quantize`."""
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name in MODELS:
        src = FIXTURES / name
        q = d / name.replace(".ckpt", ".int8")
        cli("quantize", "--checkpoint", str(src), "--out", str(q))
        out[name] = src
        out[name + ":int8"] = q
    return out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("precision", ["f32", "bf16", "int8"])
def test_loss_equals_recur_eval(checkpoints, tmp_path, name, precision):
    path = checkpoints[name + ":int8"] if precision == "int8" else checkpoints[name]
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    want = json.loads(cli("eval", "--checkpoint", str(path), "--text", str(text), "--json", "--precision", precision))
    m = recur.CharModel(str(path), precision=precision)
    assert m.precision == precision
    assert m.loss(TEXT) == want["loss_nats"]
    assert m.loss(TEXT, chunk=7) == pytest.approx(want["loss_nats"], rel=1e-6)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("precision", ["f32", "int8"])
def test_sample_equals_recur_sample(checkpoints, name, precision):
    path = checkpoints[name + ":int8"] if precision == "int8" else checkpoints[name]
    m = recur.CharModel(str(path))  # an int8 checkpoint runs in int8 by default, as in the CLI
    assert m.precision == precision
    for prime, length, temperature, top_k, seed in [("hello", 200, 0.8, 0, 1), ("the ", 150, 1.3, 5, 42)]:
        want = cli(
            "sample", "--checkpoint", str(path), "--prime", prime, "--length", str(length),
            "--temperature", str(temperature), "--top-k", str(top_k), "--seed", str(seed),
        )
        got = m.sample(prime, length, temperature, top_k, seed)
        assert len(got) == length
        assert prime + got + "\n" == want
    # the CLI's defaults (a newline as the prime, not printed; 1000 characters, temperature 0.8,
    # seed 1) are sample()'s
    assert m.sample() + "\n" == cli("sample", "--checkpoint", str(path))


def test_bad_input_is_refused(checkpoints, tmp_path):
    m = recur.CharModel(str(checkpoints[MODELS[0]]))
    assert len(m.vocab) == 31 and m.num_params == 1088
    with pytest.raises(ValueError, match=r"text: 2 character\(s\) not in the model's vocabulary: 'Q', 'Z'"):
        m.loss("QZ hello")
    with pytest.raises(ValueError, match="at least 2 are needed"):
        m.loss("h")
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        m.loss("hello", chunk=0)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        m.sample("h", 5, temperature=0.0)
    with pytest.raises(ValueError, match="prime must not be empty"):
        m.sample("", 5)
    with pytest.raises(ValueError, match="unknown precision|precision"):
        recur.CharModel(str(checkpoints[MODELS[0]]), precision="fp8")
    with pytest.raises(OSError, match="no such file"):
        recur.CharModel(str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.safetensors"):
        recur.CharModel(str(junk))
    with pytest.raises(ValueError, match="not a recur checkpoint"):
        recur.CharModel(str(FIXTURES / "stack_f32.safetensors"))  # torch's tensors, no metadata
