"""SmolLM2-135M real weights (GGUF Q4_1) against HF transformers on the same file.

Stored reference: scripts/make_smollm2_reference.py (HF dequantizes the GGUF itself).
Live reference: the same computation when torch + transformers are installed.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj

pytestmark = pytest.mark.slow
REF = Path(__file__).parent / "fixtures" / "smollm2" / "reference.npz"


@pytest.fixture(scope="module")
def smollm2():
    return mj.load("smollm2-135m")


@pytest.fixture(scope="module")
def reference():
    data = np.load(REF)
    meta = json.loads(REF.with_suffix(".json").read_text())
    return data, meta


_logits = jax.jit(lambda m, t: mj.run(m, t).logits[0])


def test_config(smollm2):
    c = smollm2.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab) == (
        30,
        576,
        9,
        3,
        64,
        1536,
        49152,
    )
    assert c.rope_theta == 100000.0 and c.tie_embeddings


def test_tokenizer_matches_hf_ids(smollm2, reference):
    data, meta = reference
    for i, prompt in enumerate(meta["prompts"]):
        assert smollm2.tokenizer.encode(prompt) == data[f"tokens_{i}"].tolist(), prompt
    assert max(meta["lengths"]) > 100


def test_logits_match_hf_reference(smollm2, reference):
    data, meta = reference
    for i in range(len(meta["prompts"])):
        toks = data[f"tokens_{i}"]
        logits = np.asarray(_logits(smollm2, jnp.asarray(toks[None])))
        top = np.take_along_axis(logits, data[f"top_ids_{i}"], -1)
        assert np.abs(top - data[f"top_logits_{i}"]).max() <= 1e-3, (
            f"prompt {i}: {max_diff(top, data[f'top_logits_{i}'])}"
        )
        last = data[f"last_logits_{i}"]
        assert np.abs(logits[-1] - last).max() <= 1e-3, f"prompt {i}: {max_diff(logits[-1], last)}"


def test_greedy_continuations_match_hf(smollm2, reference):
    # all prompts in one left-padded batch through the KV-cache loop (the cache itself is
    # checked against full recomputation in test_generation.py)
    data, meta = reference
    n = len(meta["prompts"])
    prompts = [data[f"tokens_{i}"].tolist() for i in range(n)]
    gen = mj.generate(smollm2, prompts, meta["new_tokens"], stop_tokens=())
    for i in range(n):
        got, want = np.asarray(gen.tokens[i]).tolist(), data[f"greedy_{i}"].tolist()
        assert got == want, (
            f"prompt {i}: {smollm2.tokenizer.decode(got)!r} vs {smollm2.tokenizer.decode(want)!r}"
        )


def test_live_hf_full_logits(smollm2):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from mechjax.io import registry

    path = registry.resolve("smollm2-135m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = smollm2.tokenizer.encode("Interpretability research asks what a network computes and")
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    got = np.asarray(_logits(smollm2, jnp.asarray([ids])))
    assert np.abs(got - ref).max() <= 1e-3, max_diff(got, ref)


def test_cli_info_and_run():
    info = subprocess.run(
        [sys.executable, "-m", "mechjax.cli", "info", "smollm2-135m"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "n_layers" in info and "30" in info and "blocks.{0..29}.hook_resid_pre" in info
    assert "parameters: 134,515,008" in info  # SmolLM2-135M's published size, W_U tied
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mechjax.cli",
            "run",
            "smollm2-135m",
            "The capital of France is",
            "--top-k",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = json.loads(out)
    assert len(rows) == 3 and rows[0]["token"] == " Paris" and rows[0]["prob"] > 0.3


def test_cli_unknown_model_is_a_clear_error():
    r = subprocess.run(
        [sys.executable, "-m", "mechjax.cli", "info", "smollm2-136m"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "smollm2-135m" in r.stderr


def test_patch_sweep_equals_single_patched_forwards_on_one_layer(smollm2):
    from mechjax.metrics import LogitDiff
    from mechjax.patching import patch_sweep

    tok = smollm2.tokenizer
    clean = jnp.asarray([tok.encode("When Mary and John went to the store, John gave a drink to")])
    corrupt = jnp.asarray(
        [tok.encode("When Mary and John went to the store, Mary gave a drink to")]
    )
    mary, john = tok.to_single_token(" Mary"), tok.to_single_token(" John")
    metric = LogitDiff(jnp.array([mary]), jnp.array([john]))
    res = patch_sweep(smollm2, clean, corrupt, metric, "resid_pre", layers=[10])
    site = "blocks.10.hook_resid_pre"
    source = mj.run(smollm2, clean, capture=[site]).cache[site]
    one = jax.jit(
        lambda p: metric(
            mj.run(smollm2, corrupt, hooks={site: mj.patch(source, positions=p)}).logits
        )
    )
    loop = np.array([float(one(jnp.array([p]))) for p in range(clean.shape[1])])
    assert np.abs(np.asarray(res.grid[0]) - loop).max() <= 1e-3, max_diff(res.grid[0], loop)
    assert loop[9] > 3.0 and abs(loop[0] - float(res.corrupted_metric)) < 1e-3  # S2 carries it
