"""HLE's metrics (paper 8): accuracy, Wald interval, calibration error, parsing, judging."""

import json
import math

import numpy as np
import pytest

from mechjax.evals import answers, calibration, hle

# ---------------------------------------------------------------- calibration error


def _calibrated(n_bins: int, beta: int = 100):
    """Bins of `beta` items at confidence c_b with exactly round(c_b * beta) correct."""
    conf, corr = [], []
    for b in range(n_bins):
        c = (b + 0.5) / n_bins
        k = round(c * beta)
        conf += [k / beta] * beta
        corr += [True] * k + [False] * (beta - k)
    return np.asarray(conf), np.asarray(corr)


@pytest.mark.parametrize("skip_last", [True, False])
def test_perfectly_calibrated_gives_zero(skip_last):
    conf, corr = _calibrated(10)
    assert calibration.calibration_error(conf, corr, 100, skip_last=skip_last) == pytest.approx(
        0.0, abs=1e-9
    )


@pytest.mark.parametrize("skip_last", [True, False])
def test_random_calibrated_gives_about_zero(skip_last):
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 20000)
    corr = rng.uniform(0, 1, 20000) < conf
    # only binomial noise is left: E[gap^2] = E[c(1-c)] / beta = (1/6) / 100 for uniform c
    noise_floor = 100 * math.sqrt(1 / 6 / 100)
    value = calibration.calibration_error(conf, corr, skip_last=skip_last)
    assert abs(value - noise_floor) < 1.0
    # the same confidences stated 30 points too high are visibly miscalibrated
    shifted = np.clip(conf + 0.3, 0, 1)
    assert calibration.calibration_error(shifted, corr, skip_last=skip_last) > 20.0


def test_wrong_at_full_confidence_gives_about_100_both_variants():
    conf, corr = np.ones(10000), np.zeros(10000, bool)
    assert calibration.calibration_error(conf, corr, skip_last=False) == pytest.approx(100.0)
    # HLE's loop skips the last of the 100 bins: 100 * sqrt(1 - 100 / 10000)
    hle_value = calibration.calibration_error(conf, corr, skip_last=True)
    assert hle_value == pytest.approx(100 * math.sqrt(0.99))
    assert hle_value > 99.0


def test_hand_computed_small_example():
    # 250 items, beta 100 -> bins [0,100) and [100,250) after sorting by confidence.
    # bin 1: 100 items at conf 0.2, 50 correct   -> gap 0.3
    # bin 2: 150 items at conf 0.9, 120 correct  -> gap 0.1
    conf = np.r_[np.full(150, 0.9), np.full(100, 0.2)]  # unsorted on purpose
    corr = np.r_[np.ones(120, bool), np.zeros(30, bool), np.ones(50, bool), np.zeros(50, bool)]
    fixed = 100 * math.sqrt(100 / 250 * 0.3**2 + 150 / 250 * 0.1**2)
    hle_like = 100 * math.sqrt(100 / 250 * 0.3**2)
    assert calibration.calibration_error(conf, corr, skip_last=False) == pytest.approx(fixed)
    assert calibration.calibration_error(conf, corr, skip_last=True) == pytest.approx(hle_like)
    assert calibration.calibration_error(conf, corr, skip_last=False, p="1") == pytest.approx(
        100 * (100 / 250 * 0.3 + 150 / 250 * 0.1)
    )
    assert calibration.calibration_error(conf, corr, skip_last=False, p="max") == pytest.approx(30)


def test_fewer_than_two_bins_hle_variant_is_blind():
    # 150 items: one bin (the last), which HLE's loop skips -> 0 however bad the answers
    conf, corr = np.ones(150), np.zeros(150, bool)
    assert calibration.calibration_error(conf, corr, skip_last=True) == 0.0
    assert calibration.calibration_error(conf, corr, skip_last=False) == pytest.approx(100.0)


def test_below_beta_items():
    with pytest.raises(ValueError, match="at least beta"):
        calibration.calibration_error([0.5] * 10, [True] * 10, skip_last=True)
    # one bin: mean conf 0.5, accuracy 0.3
    corr = [True] * 3 + [False] * 7
    assert calibration.calibration_error([0.5] * 10, corr, skip_last=False) == pytest.approx(20.0)


def test_bad_confidence_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration.calibration_error([85.0] * 200, [True] * 200)


# ---------------------------------------------------------------- accuracy and Wald


def test_accuracy_over_all_questions_and_wald():
    assert calibration.accuracy([True, True, False], n=10) == pytest.approx(20.0)
    # 1.96 * sqrt(20 * 80 / 10) = 1.96 * sqrt(160)
    assert calibration.wald_interval(20.0, 10) == pytest.approx(1.96 * math.sqrt(160))
    with pytest.raises(ValueError):
        calibration.accuracy([True] * 5, n=3)


# ---------------------------------------------------------------- parsing and judging


@pytest.mark.parametrize(
    "text, answer, conf, missing",
    [
        ("Explanation: easy\nAnswer: 42\nConfidence: 85%", "42", 85.0, False),
        ("Exact Answer: Paris\nConfidence: 0.9", "Paris", 90.0, False),
        ("answer: B\nconfidence: 140 %", "B", 100.0, False),
        ("Answer: 7 Confidence: 30%", "7", 30.0, False),
        ("I think it is 42.", None, 100.0, True),
        ("Answer:\nConfidence: 10%", None, 10.0, False),
        ("", None, 100.0, True),
        (None, None, 100.0, True),
    ],
)
def test_parse_response(text, answer, conf, missing):
    p = answers.parse_response(text)
    assert (p.answer, p.confidence, p.confidence_missing) == (answer, conf, missing)


def test_last_answer_label_wins():
    p = answers.parse_response("Answer: 3\nWait.\nFinal Answer: 4\nConfidence: 50%")
    assert p.answer == "4"


@pytest.mark.parametrize(
    "ans, gold, ok",
    [
        ("The Eiffel Tower.", "eiffel tower", True),
        ("1,000", "1000", True),
        ("3.0", "3", True),
        ("$\\boxed{12}$", "12", True),
        ("3/4", "0.75", True),
        ("13", "12", False),
        ("-5", "5", False),
        ("-5.0", "-5", True),
        ("(B) blue.", "b) blue", True),
        ("Paris, France", "Paris", False),
        (None, "12", False),
    ],
)
def test_exact_match(ans, gold, ok):
    assert answers.judge_exact_match(ans, gold) is ok


@pytest.mark.parametrize(
    "ans, ok", [("B", True), ("(b)", True), ("B. Blue", True), ("C", False), ("Blue", False)]
)
def test_multiple_choice(ans, ok):
    assert answers.judge_multiple_choice(ans, "B") is ok


def test_score_counts_unparseable_as_wrong():
    outputs = [
        "Answer: 4\nConfidence: 90%",  # right
        "the answer is 9",  # unparseable: wrong, confidence 100
        None,  # no response: wrong
        "Answer: C\nConfidence: 60%",  # wrong letter
    ]
    m, judged = hle.score(outputs, ["4", "9", "1", "B"], ["exactMatch"] * 3 + ["multipleChoice"])
    assert [j.correct for j in judged] == [True, False, False, False]
    assert (m.n, m.n_correct, m.n_unparseable, m.n_missing_confidence) == (4, 1, 2, 2)
    assert m.accuracy == pytest.approx(25.0)
    assert m.half_width == pytest.approx(1.96 * math.sqrt(25 * 75 / 4))
    assert math.isnan(m.calibration_error_hle)  # fewer than 100 questions
    # one bin: mean confidence (90 + 100 + 100 + 60) / 400 = 0.875, accuracy 0.25
    assert m.calibration_error_fixed == pytest.approx(62.5)


def test_hle_rounding():
    conf = np.r_[np.full(100, 97.0), np.full(100, 50.0), np.full(100, 50.0)]
    corr = np.r_[
        np.zeros(100, bool),
        np.ones(50, bool),
        np.zeros(50, bool),
        np.ones(50, bool),
        np.zeros(50, bool),
    ]
    m = hle.score_judged(corr, conf)
    # bins by confidence: [50 x100], [50 x100], [97 x100] (last, skipped by HLE)
    assert m.calibration_error_hle == pytest.approx(0.0, abs=1e-9)
    assert m.calibration_error_fixed == pytest.approx(100 * math.sqrt(0.97**2 / 3))
    r = m.hle_rounded()
    assert r["accuracy"] == pytest.approx(33.33)
    assert r["half_width"] == pytest.approx(round(1.96 * math.sqrt(33.33 * 66.67 / 300), 2))


def test_load_jsonl_and_prompt(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(
        json.dumps({"question": "2+2?", "answer": "4"})
        + "\n\n"
        + json.dumps({"id": "x", "question": "Colour?", "answer": "A", "choices": ["red", "blue"]})
        + "\n"
    )
    rows = hle.load_jsonl(f)
    assert [r["answer_type"] for r in rows] == ["exactMatch", "multipleChoice"]
    assert rows[1]["id"] == "x"
    prompt = hle.build_prompt(rows[1])
    assert "A. red\nB. blue" in prompt and "Confidence:" in prompt
    assert prompt.endswith("Explanation:")
    f.write_text(json.dumps({"question": "no answer"}) + "\n")
    with pytest.raises(ValueError, match="answer"):
        hle.load_jsonl(f)


# ---------------------------------------------------------------- the JSONL runner

QUESTIONS = [
    {"id": "q1", "question": "What is 2 plus 2?", "answer": "4"},
    {"id": "q2", "question": "Which is a colour?", "answer": "B", "choices": ["dog", "blue"]},
    {"id": "q3", "question": "Capital of France?", "answer": "Paris"},
]


def _write(tmp_path):
    f = tmp_path / "questions.jsonl"
    f.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    return f


def test_run_jsonl_with_scripted_outputs(tmp_path):
    seen = {}

    class Out:
        texts = [
            " adding\nAnswer: 4\nConfidence: 80%",  # right
            " hmm\nAnswer: A\nConfidence: 40%",  # wrong letter
            " no idea",  # unparseable: wrong, confidence 100
        ]

    def fake_generate(model, prompts, max_new_tokens, chat=False):
        seen["prompts"], seen["max_new"] = prompts, max_new_tokens
        return Out()

    m, judged = hle.run_jsonl(None, _write(tmp_path), max_new_tokens=5, generate_fn=fake_generate)
    assert seen["max_new"] == 5 and len(seen["prompts"]) == 3
    assert "A. dog\nB. blue" in seen["prompts"][1]
    assert [j.id for j in judged] == ["q1", "q2", "q3"]
    assert [j.correct for j in judged] == [True, False, False]
    assert (m.n, m.n_correct, m.n_unparseable, m.n_missing_confidence) == (3, 1, 1, 1)
    assert m.accuracy == pytest.approx(100 / 3)
    # one bin: mean confidence (0.8 + 0.4 + 1.0) / 3, accuracy 1/3
    assert m.calibration_error_fixed == pytest.approx(100 * abs(2.2 / 3 - 1 / 3))


def test_run_jsonl_on_a_tiny_random_model(tmp_path, tiny_llama):
    import dataclasses

    import tokenizers
    from tokenizers import models, pre_tokenizers

    from mechjax.io.tokenizer import Tokenizer

    words = ["<unk>", "<s>", "<pad>", "Answer:", "Confidence:", "Explanation:", "4", "B"]
    words += ["Paris", "80%", "A", "blue", "dog"] + [f"w{i}" for i in range(37)]
    backend = tokenizers.Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = Tokenizer(backend, bos_token="<s>", pad_token="<pad>", add_bos=True)
    model = dataclasses.replace(tiny_llama, tokenizer=tok)
    m, judged = hle.run_jsonl(model, _write(tmp_path), max_new_tokens=6)
    # every question is scored, whatever the random model says
    assert m.n == 3 and len(judged) == 3
    assert m.n_correct == sum(j.correct for j in judged)
    assert m.n_unparseable == sum(j.parsed.answer is None for j in judged)
    assert m.accuracy == pytest.approx(100 * m.n_correct / 3)
    for j in judged:
        if j.parsed.answer is None:
            assert not j.correct and j.parsed.confidence == 100.0


def test_numeric_tolerance_is_opt_in():
    outputs = ["Answer: 3.1416\nConfidence: 50%"]
    strict, _ = hle.score(outputs, ["3.14159"])
    loose, _ = hle.score(outputs, ["3.14159"], rel_tol=1e-4)
    assert (strict.n_correct, loose.n_correct) == (0, 1)


def test_run_jsonl_takes_a_generate_fn_returning_a_list(tmp_path):
    def fake_generate(model, prompts, max_new_tokens, chat=False):
        return [" so\nAnswer: 4\nConfidence: 90%"] + [" ?"] * (len(prompts) - 1)

    m, judged = hle.run_jsonl(None, _write(tmp_path), max_new_tokens=5, generate_fn=fake_generate)
    assert m.n == 3 and m.n_unparseable == 2
    assert judged[0].correct and not judged[1].correct
