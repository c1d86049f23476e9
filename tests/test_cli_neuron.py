"""`mechjax neuron`: top-activating contexts over the offline corpus and the logit effect
of the output row, on SmolLM2 with a tiny corpus; range errors name the valid range."""

import re

import numpy as np
import pytest

import mechjax as mj
from mechjax import corpus, harvest
from mechjax.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return mj.load("smollm2-135m")


@pytest.fixture
def cli(smollm2, monkeypatch, capsys):
    """`mechjax ...` in this process, loading SmolLM2 once for the file."""
    monkeypatch.setattr(mj, "load", lambda name: smollm2)

    def run(*argv):
        rc = main(list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


def test_neuron_prints_top_contexts_and_boosted_and_suppressed_tokens(cli, smollm2):
    layer, neuron = 29, 100
    rc, out, err = cli(
        "neuron", "smollm2-135m", str(layer), str(neuron), "--k", "4", "--ctx-len", "16",
        "--n-chunks", "6", "--batch-size", "4", "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"neuron {neuron} of layer {layer} of smollm2-135m (blocks.29.mlp.hook_post)"
    assert lines[1].startswith("corpus: 6 chunks x 16 tokens from pydoc_topics, stdlib_docstrings")
    rows = [ln for ln in lines if re.match(r"^\s+\d+\s+-?\d+\.\d{4}\s+chunk", ln)]
    assert len(rows) == 4 and all("[[" in r and "]]" in r for r in rows)
    values = [float(r.split()[1]) for r in rows]
    assert values == sorted(values, reverse=True)
    # the same numbers as the library over the same chunks
    tokens = corpus.token_chunks(smollm2, corpus.documents(), ctx_len=16, n_chunks=6)
    top = harvest.top_activating(smollm2, tokens, layer, [neuron], k=4, batch_size=4)
    np.testing.assert_allclose(values, top.values[0], atol=1e-3)
    # the logit view, recomputed here from the weights: w_out @ (w_final * W_U), centered
    # over the vocabulary
    p = smollm2.params
    W = np.asarray(p["ln_final"]["w"], np.float32)[:, None] * np.asarray(p["unembed"]["W_U"])
    W -= W.mean(1, keepdims=True)
    effect = np.asarray(p["blocks"][layer]["mlp"]["W_out"][neuron], np.float32) @ W
    norm = np.linalg.norm(np.asarray(p["blocks"][layer]["mlp"]["W_out"][neuron], np.float32))
    assert f"|w_out| = {norm:.4f}" in out and "final norm's gain folded in" in out
    boosted = next(ln for ln in lines if ln.strip().startswith("boosted:"))
    suppressed = next(ln for ln in lines if ln.strip().startswith("suppressed:"))
    best, worst = int(np.argmax(effect)), int(np.argmin(effect))
    first = lambda line: line.split(":", 1)[1].strip()
    assert first(boosted).startswith(f"{smollm2.to_str_tokens([best])[0]!r} {effect[best]:+.3f}")
    assert first(suppressed).startswith(
        f"{smollm2.to_str_tokens([worst])[0]!r} {effect[worst]:+.3f}"
    )
    assert boosted.count(", ") >= 9 and suppressed.count(", ") >= 9


@pytest.mark.parametrize(
    "layer, neuron, message",
    [
        ("29", "2000", "neuron 2000 is out of range for layer 29 of smollm2-135m: valid 0..1535"),
        ("30", "5", "layer 30 is out of range for smollm2-135m: valid 0..29"),
        ("-1", "5", "layer -1 is out of range for smollm2-135m: valid 0..29"),
    ],
)
def test_out_of_range_layer_or_neuron_is_a_clear_error(cli, layer, neuron, message):
    rc, out, err = cli("neuron", "smollm2-135m", layer, neuron, "--n-chunks", "2", "--quiet")
    assert rc == 2 and out == ""
    assert f"mechjax: error: {message}" in err


def test_a_site_the_model_lacks_is_a_clear_error(cli):
    rc, _, err = cli("neuron", "smollm2-135m", "3", "5", "--site", "mlp.hook_nothing", "--quiet")
    assert rc == 2 and "no site 'blocks.3.mlp.hook_nothing'" in err
