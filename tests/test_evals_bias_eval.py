"""Prompting and scoring of the paired cognitive-bias sets, with scripted model outputs."""

import math

import pytest

from mechjax.evals import bias_eval as E
from mechjax.evals import biases as B


class _Out:
    def __init__(self, texts):
        self.texts = texts


def test_prompts_follow_the_paper():
    assert E.direct_prompt("Ann has 3 pens.") == (
        "Q: Ann has 3 pens.\nA: The answer (arabic numerals) is "
    )
    assert E.cot_prompt("X?") == "Q: X?\nA: Let's think step by step."


@pytest.mark.parametrize(
    "text, value",
    [(" 42.", 42.0), ("1,200 apples", 1200.0), ("-3 and 5", -3.0), ("none", None), (None, None)],
)
def test_extract_number(text, value):
    assert E.extract_number(text) == value


def test_evaluate_pairs_direct_counts_and_tests():
    pairs = B.carry_pairs(8, seed=0)
    answers = {p.a.text: p.answer for p in pairs} | {p.b.text: p.answer for p in pairs}
    wrong_b = {p.b.text for p in pairs[:4]}  # b wrong on the first four pairs
    garbled = pairs[7].a.text  # a unparseable on the last pair

    def fake(model, prompts, max_new_tokens):
        out = []
        for pr in prompts:
            q = pr[len("Q: ") : pr.index("\nA:")]
            if q == garbled:
                out.append(" many")
            else:
                out.append(f" {answers[q] + (1 if q in wrong_b else 0)}.")
        return _Out(out)

    r = E.evaluate_pairs(None, pairs, generate_fn=fake, batch_size=3)
    assert r["n"] == 8 and r["n_unparsed_a"] == 1 and r["n_unparsed_b"] == 0
    assert r["acc_a"] == pytest.approx(7 / 8) and r["acc_b"] == pytest.approx(4 / 8)
    # d = a - b per pair: [1, 1, 1, 1, 0, 0, 0, -1]: mean 3/8, sd by hand
    d = [1, 1, 1, 1, 0, 0, 0, -1]
    mean = sum(d) / 8
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 7)
    t = mean / (sd / math.sqrt(8))
    from mechjax.evals.stats import student_t_sf

    assert r["p_value"] == pytest.approx(2 * student_t_sf(t, 7.0))
    # McNemar exact: n10 = 4, n01 = 1 -> 2 * P(X <= 1), X ~ Bin(5, 1/2) = 2 * 6 / 32
    assert r["p_mcnemar"] == pytest.approx(12 / 32)
    assert [it["correct_a"] for it in r["items"]] == [True] * 7 + [False]


def test_evaluate_pairs_cot_two_stages():
    pairs = B.transfer_comparison_pairs(2, seed=1)
    seen = []

    def fake(model, prompts, max_new_tokens):
        seen.append((list(prompts), max_new_tokens))
        if prompts[0].endswith(E.COT_TRIGGER):
            return _Out(["I add them."] * len(prompts))
        return _Out([" 7"] * len(prompts))

    r = E.evaluate_pairs(None, pairs, mode="cot", max_new_tokens=5, generate_fn=fake)
    reasoning, answer = seen[0], seen[1]
    assert reasoning[1] == 20 and answer[1] == 5
    assert answer[0][0] == f"{E.cot_prompt(pairs[0].a.text)} I add them.\n{E.ANSWER_TRIGGER}"
    expect_a = sum(p.answer == 7 for p in pairs) / 2
    assert r["acc_a"] == pytest.approx(expect_a) and r["acc_b"] == pytest.approx(expect_a)
    with pytest.raises(ValueError, match="mode"):
        E.evaluate_pairs(None, pairs, mode="few-shot", generate_fn=fake)
