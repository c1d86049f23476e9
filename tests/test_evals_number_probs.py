"""P(R) over candidate numbers from a tiny random model, multi-token numbers included."""

import dataclasses

import jax
import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

import mechjax as mj
from mechjax.evals import number_probs as NP
from mechjax.io.tokenizer import Tokenizer

WORDS = ["<unk>", "<s>", "Q:", "A:", "how", "many"] + [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digit_llama(tiny_llama):
    """The tiny Llama with a tokenizer that writes one digit per token (as SmolLM2)."""
    backend = tokenizers.Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok = Tokenizer(backend, bos_token="<s>", add_bos=True)
    return dataclasses.replace(tiny_llama, tokenizer=tok)


def test_number_tokens_split_digits(digit_llama):
    prompt_ids, cands = NP.number_tokens(digit_llama.tokenizer, "Q: how many A:", [3, 12, 407])
    assert prompt_ids == [1, 2, 4, 5, 3]
    d = {str(i): WORDS.index(str(i)) for i in range(10)}
    assert cands == [[d["3"]], [d["1"], d["2"]], [d["4"], d["0"], d["7"]]]


def test_number_probs_match_one_run_per_candidate(digit_llama):
    prompt, numbers = "Q: how many A:", [3, 12, 407]
    p = NP.number_probs(digit_llama, prompt, numbers)
    prompt_ids, cands = NP.number_tokens(digit_llama.tokenizer, prompt, numbers)
    # oracle: the candidates padded with another token (9, not 0) to the runner's bucket of
    # 32, every log-prob gathered by hand from a full log-softmax
    n = len(prompt_ids)
    seqs = np.asarray([prompt_ids + c + [9] * (32 - n - len(c)) for c in cands], np.int32)
    logp = np.asarray(jax.nn.log_softmax(mj.run(digit_llama, seqs).logits, -1))
    means = [np.mean([logp[i, n - 1 + j, t] for j, t in enumerate(c)]) for i, c in enumerate(cands)]
    expect = np.exp(means) / np.exp(means).sum()
    np.testing.assert_allclose(p, expect, rtol=1e-5, atol=1e-7)
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0)


def test_boundary_change_is_an_error():
    backend = tokenizers.Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(WORDS + ["A:3"])}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = Tokenizer(backend, bos_token="<s>", add_bos=True)
    with pytest.raises(ValueError, match="prompt's tokens change"):
        NP.number_tokens(tok, "Q: A:", [3], prefix="")


def test_profile_runs_on_the_model(digit_llama):
    from mechjax.evals import robustness_eval as RE
    from mechjax.evals.robustness_pairs import intervention_pairs

    pairs = {"dce_s": intervention_pairs("3", 1, seed=0, lo=2, hi=4)}
    prof = RE.profile(pairs, 40, model=digit_llama, prompt=lambda t: f"Q: {t} A:", n_boot=20)
    pr = pairs["dce_s"][0]
    p = NP.number_probs(digit_llama, f"Q: {pr.base.text} A:", list(range(41)))
    q = NP.number_probs(digit_llama, f"Q: {pr.alt.text} A:", list(range(41)))
    r = pr.base.answer
    assert prof["dce_s"]["n"] == 1
    # profile scores through the KV cache (number_probs_batch): float32 rounding apart
    want = max((p[r] - q[r]) / q[r], (q[r] - p[r]) / p[r])
    assert prof["dce_s"]["mean"] == pytest.approx(want, rel=1e-5)


def test_candidate_rows_cover_every_context():
    cands = [[7], [1, 2], [1, 2, 5], [1, 0, 4], [3, 3], [1]]
    rows, where = NP.candidate_rows(cands)
    assert sorted(rows) == [(1, 0), (1, 2), (3,)]  # (1,) lies inside (1, 0) or (1, 2)
    for c, r in zip(cands, where):
        if len(c) == 1:
            assert r == -1
        else:
            assert rows[r][: len(c) - 1] == tuple(c[:-1])


def test_number_probs_batch_equals_one_prompt_at_a_time(digit_llama):
    # prompts of different lengths (left padding), more prompts than a batch (the last
    # one padded with copies), numbers of one to three digits
    prompts = ["Q: how many A:", "Q: how many how many many A:", "Q: many A:"]
    numbers = list(range(0, 130, 7)) + [300]
    got = NP.number_probs_batch(digit_llama, prompts, numbers, batch=2)
    want = np.stack([NP.number_probs(digit_llama, p, numbers) for p in prompts])
    assert got.shape == (3, len(numbers))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)
