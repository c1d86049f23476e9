"""Beam search: equal to HF transformers' `generate(num_beams=k)` on the same tiny random
Llama (ragged prompts in one batch, two stop tokens, four length-penalty / early-stopping
settings from one compiled program), equal to greedy `mj.generate` with one beam,
interventions at every step, clear errors."""

import numpy as np
import pytest

import mechjax as mj
from mechjax.errors import InputError
from mechjax.io.families import family_for

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = [[44, 12, 90, 7, 33], [15, 71, 9, 62, 88, 24, 50, 11, 38], [81, 27, 66, 40, 19, 93, 7]]
N_NEW = 12


@pytest.fixture(scope="module")
def pair():
    """(HF model, the same weights as a mechjax model): 2 layers, GQA, vocabulary 97."""
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # large weights: any wrong op, and any wrong beam, shows
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5) + (p.dim() == 1))
    fam = family_for("llama")
    c = fam.config_from_hf(cfg.to_dict())
    params = fam.params_from_hf({k: v.numpy() for k, v in hf.state_dict().items()}, c)
    return hf, mj.Model(params, c, fam)


def _hf_beams(hf, prompt, stops, **kw):
    out = hf.generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=N_NEW, eos_token_id=stops,
        pad_token_id=0, return_dict_in_generate=True, output_scores=True, **kw,
    )  # fmt: skip
    return out.sequences[0, len(prompt) :].numpy(), float(out.sequences_scores[0])


@pytest.mark.parametrize("stops", [[27, 56]])
def test_beam_search_equals_hf_num_beams(pair, stops):
    """k = 3 beams, stop tokens the model emits (so beams finish early, 3k candidates are
    kept), HF's four scoring settings: same ids, lengths and scores as HF one prompt at
    a time."""
    hf, model = pair
    early_finishes = 0
    settings = [(1.0, False), (0.0, True), (2.0, "never"), (-1.0, False)]
    for lp, es in settings:
        g = mj.beam_search(
            model, PROMPTS, N_NEW, num_beams=3, length_penalty=lp, early_stopping=es,
            stop_tokens=stops,
        )  # fmt: skip
        for i, p in enumerate(PROMPTS):
            ids, score = _hf_beams(hf, p, stops, num_beams=3, length_penalty=lp, early_stopping=es)
            n = int(g.lengths[i])
            np.testing.assert_array_equal(g.tokens[i, :n], ids[:n], err_msg=f"{lp} {es} {i}")
            assert np.all(ids[n:] == 0), (lp, es, i, ids, n)  # HF pads after the length
            assert g.scores[i] == pytest.approx(score, rel=1e-4, abs=1e-5)
            early_finishes += n < N_NEW
        assert np.all(np.diff(g.beam_scores, axis=1) <= 0)  # beams sorted best first
    assert early_finishes >= 3  # the finished-beam bookkeeping was exercised


def test_one_beam_is_greedy_and_hooks_apply_at_every_step(pair):
    """num_beams=1 with early_stopping=True is greedy `mj.generate` (stop tokens
    included); an intervention that forces a token applies at the prefill and at every
    step (a function of the step limits it to the first three)."""
    _, model = pair
    stops = [27, 56]
    greedy = mj.generate(model, PROMPTS, N_NEW, stop_tokens=stops)
    g = mj.beam_search(model, PROMPTS, N_NEW, num_beams=1, early_stopping=True, stop_tokens=stops)
    np.testing.assert_array_equal(g.lengths, greedy.lengths)
    for i in range(len(PROMPTS)):
        n = int(g.lengths[i])
        np.testing.assert_array_equal(g.tokens[i, :n], greedy.tokens[i, :n])
    force = 50.0 * model.params["unembed"]["W_U"][:, 17]
    site = f"blocks.{model.config.n_layers - 1}.hook_resid_post"
    g = mj.beam_search(
        model, PROMPTS, N_NEW, num_beams=2, stop_tokens=(),
        hooks=lambda step, v: {site: mj.add(v * (step < 3))}, hook_args=force,
    )  # fmt: skip
    assert np.all(g.tokens[:, :3] == 17) and not np.all(g.tokens[:, 3:] == 17)
    assert np.all(g.lengths == N_NEW)


def test_beam_search_bad_input_raises_clear_errors(pair):
    _, model = pair
    with pytest.raises(InputError, match="num_beams"):
        mj.beam_search(model, PROMPTS, 4, num_beams=0)
    with pytest.raises(InputError, match="early_stopping"):
        mj.beam_search(model, PROMPTS, 4, early_stopping="sometimes")
    with pytest.raises(InputError, match="length_penalty"):
        mj.beam_search(model, PROMPTS, 4, length_penalty=float("nan"))
    with pytest.raises(InputError, match="n_ctx"):
        mj.beam_search(model, PROMPTS, 100)
    with pytest.raises(InputError, match="d_vocab"):
        mj.beam_search(model, PROMPTS, 4, num_beams=1, stop_tokens=list(range(97)))
