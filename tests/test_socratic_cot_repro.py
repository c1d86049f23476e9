"""The Socratic CoT reproduction: the students' token formats, the decomposer-solver loop
(with oracle students standing in for trained ones), and the contract at smoke size."""

import json

import numpy as np
import pytest

from mechjax.analyses import socratic_cot as repro
from mechjax.analyses.socratic_cot import data as D
from mechjax.analyses.socratic_cot import students as S
from mechjax.evals import socratic

VOCAB = D.build_vocab()
CFG = S.model_config({"d_model": 16, "n_layers": 1, "n_heads": 2}, len(VOCAB))


def _sups(n=40, steps=(2, 3, 4, 5, 6), seed=1):
    return [socratic.teach(p) for p in D.problems(n, steps, seed, lo=2, hi=9)]


def test_vocabulary_covers_every_format_and_round_trips():
    for sup in _sups(200):
        for text in (sup.problem, sup.cot, sup.socratic):
            ids = VOCAB.encode(text)
            assert VOCAB.decode(ids) == D.split_words(text)
    assert (VOCAB.pad, VOCAB.sep, VOCAB.ans, VOCAB.eos) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="'Zebra' is not in the students' vocabulary"):
        VOCAB.encode("Zebra has 3 apples.")
    # numbers are written digit by digit, and read back whole
    assert VOCAB.decode(VOCAB.encode("105 - 7 = 98.")) == list("105") + ["-", "7", "="] + list(
        "98."
    )
    assert D.join_words(VOCAB.decode(VOCAB.encode("105 - 7 = 98."))) == "105 - 7 = 98 ."
    assert len(VOCAB) < 200


def test_loss_masks_cover_exactly_the_targets():
    sup = _sups(1, steps=(3,))[0]
    words = lambda ids: " ".join(VOCAB.decode(ids))  # noqa: E731
    prompt = VOCAB.encode(sup.problem) + [VOCAB.sep]
    for fmt, target in (("answer", sup.answer_only), ("cot", sup.cot), ("unified", sup.socratic)):
        ids, mask = D.encode_example(VOCAB, sup, fmt)
        assert ids[: len(prompt)] == prompt and not any(mask[: len(prompt)])
        assert [t for t, m in zip(ids, mask) if m] == VOCAB.encode(target) + [VOCAB.eos]
    ids, mask = D.encode_example(VOCAB, sup, "qg")
    q_ids = sum((VOCAB.encode(s.question) + [VOCAB.sep] for s in sup.steps), []) + [VOCAB.eos]
    assert ids == prompt + q_ids and [t for t, m in zip(ids, mask) if m] == q_ids
    ids, mask = D.encode_example(VOCAB, sup, "qa")
    targets = [t for t, m in zip(ids, mask) if m]
    assert targets == sum((VOCAB.encode(s.solution) + [VOCAB.sep] for s in sup.steps), [])
    # the subquestions are read, never predicted, by the solver
    assert words([t for t, m in zip(ids, mask) if not m]).count("How many") == len(sup.steps) + 1
    enc = D.encode_set(VOCAB, _sups(5), "qa")
    assert enc.tokens.shape == enc.mask.shape and enc.lengths.max() == enc.tokens.shape[1]
    assert (enc.tokens[np.arange(5), enc.lengths - 1] == VOCAB.sep).all()


def test_buckets_are_multiples_of_32():
    b = S.buckets(np.array([10, 31, 32, 33, 64, 65, 100]))
    assert {w: list(i) for w, i in b.items()} == {32: [0, 1, 2], 64: [3, 4], 96: [5], 128: [6]}


def _oracle(sups, wrong_step=None):
    """A stand-in for generate_ids: continues each prompt as the teacher would."""
    by_problem = {tuple(VOCAB.encode(s.problem)): s for s in sups}

    def fake(model, prompts, max_new, *, batch, bucket, stop_tokens):
        out = []
        for p in prompts:
            n = p.index(VOCAB.sep)
            sup = by_problem[tuple(p[:n])]
            if VOCAB.eos in stop_tokens:  # the decomposer
                j = p[n:].count(VOCAB.sep) - 1
                out.append(
                    VOCAB.encode(sup.steps[j].question) + [VOCAB.sep]
                    if j < len(sup.steps)
                    else [VOCAB.eos]
                )
            else:  # the solver: the j-th subquestion is the last one of the prompt
                j = p.count(VOCAB.ans) - 1
                sol = sup.steps[j].solution
                if j == wrong_step:
                    sol = sol.rsplit(" ", 1)[0] + " 0"
                out.append(VOCAB.encode(sol) + [VOCAB.sep])
        return out

    return fake


def test_pair_loop_with_oracle_students(monkeypatch):
    sups = _sups(12)
    monkeypatch.setattr(S, "_student", lambda params, cfg: None)
    monkeypatch.setattr(S, "generate_ids", _oracle(sups))
    preds = S.predict_pair(None, None, CFG, VOCAB, [s.problem for s in sups], max_steps=8, batch=4)
    assert [p.answer for p in preds] == [s.answer for s in sups]
    assert [p.n_steps for p in preds] == [len(s.steps) for s in sups]
    assert preds[0].output.startswith("Q: " + " ".join(D.split_words(sups[0].steps[0].question)))
    # a step budget below the chain length stops the loop early: the answer is a_k, not a_n
    short = S.predict_pair(None, None, CFG, VOCAB, [sups[-1].problem], max_steps=2, batch=4)
    assert short[0].n_steps == 2 and short[0].answer == sups[-1].steps[1].value
    # the teacher's subquestions in place of the decomposer's: the decomposer is not asked
    fake = _oracle(sups)

    def solver_only(model, prompts, max_new, *, batch, bucket, stop_tokens):
        assert VOCAB.eos not in stop_tokens, "the decomposer ran"
        return fake(model, prompts, max_new, batch=batch, bucket=bucket, stop_tokens=stop_tokens)

    monkeypatch.setattr(S, "generate_ids", solver_only)
    gold = [[st.question for st in x.steps] for x in sups]
    preds = S.predict_pair(
        None, None, CFG, VOCAB, [x.problem for x in sups], max_steps=8, batch=4, gold_questions=gold
    )
    assert [p.answer for p in preds] == [x.answer for x in sups]
    # the answer is the last solution's value: a wrong last step gives a wrong answer
    monkeypatch.setattr(S, "generate_ids", _oracle(sups[:1], wrong_step=len(sups[0].steps) - 1))
    bad = S.predict_pair(None, None, CFG, VOCAB, [sups[0].problem], max_steps=8, batch=4)
    assert bad[0].answer == 0 != sups[0].answer


def test_datasets_hold_out_the_test_texts():
    s = {**repro.SETTINGS["smoke"], "n_train": 300, "n_test": 20}
    data = repro.datasets(s)
    train = {t.problem for t in data["train"]}
    for k, sups in data["test"].items():
        assert len(sups) == 20 and all(len(x.steps) == k for x in sups)
        assert not train & {x.problem for x in sups}
    assert {len(t.steps) for t in data["train"]} == set(s["train_steps_range"])


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path):
    out = tmp_path / "socratic"
    assert repro.main(["--out", str(out), "--smoke", "--quiet"]) == 0
    for name in ("report.md", "results.json", "details.json", "exact_match.png",
                 "training_loss.png"):  # fmt: skip
        assert (out / name).exists(), name
    assert not (out / "checkpoints").exists()
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True and res["sizes"] == ["tiny"]
    row = res["exact_match"]["tiny"]
    assert set(row) == set(repro.METHODS)
    for m in repro.METHODS:
        assert set(row[m]["per_steps"]) == {"2", "3"}
        assert all(0.0 <= v <= 1.0 for v in row[m]["per_steps"].values())
    report = (out / "report.md").read_text()
    assert report.startswith("# Socratic CoT distillation")
    assert "Fidelity:" in report.split("\n\n")[1]
    from mechjax.analyses.socratic_cot import report as rep

    (out / "report.md").unlink()
    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report


def test_paired_bootstrap_of_exact_match():
    from mechjax.analyses.socratic_cot import report as rep

    def res(correct):
        return {"correct": correct, "exact_match": float(np.mean(correct))}

    ones, zeros, half = [1] * 40, [0] * 40, [1, 0] * 20
    details = {"s": {"results": {"cot": {"2": res(ones)}, "answer": {"2": res(zeros)},
                                 "socratic": {"2": res(half)}}}}  # fmt: skip
    assert rep.bootstrap(details, [(1, "s", "cot", [2]), (-1, "s", "answer", [2])]) == (1.0, 1.0)
    lo, hi = rep.bootstrap(details, [(1, "s", "socratic", [2]), (-1, "s", "answer", [2])])
    assert 0.3 < lo < 0.5 < hi < 0.7
    # paired: the same resampled problems for both methods, so half - half is exactly 0
    assert rep.bootstrap(details, [(1, "s", "socratic", [2]), (-1, "s", "socratic", [2])]) == (
        0.0,
        0.0,
    )
    ratio = rep.bootstrap(details, [(1, "s", "cot", [2])], ratio_of=[(1, "s", "socratic", [2])])
    assert ratio is not None and ratio[0] > 1.4
    assert rep.bootstrap(details, [(1, "s", "unified", [2])]) is None


def test_generate_ids_equals_one_generation_per_prompt(tiny_llama):
    import mechjax as mj
    from mechjax.generation_batch import generate_ids

    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]  # 2 calls, the last padded
    got = generate_ids(tiny_llama, prompts, 6, batch=3, bucket=8, stop_tokens=[7])
    for p, ids in zip(prompts, got):  # the same width alone: the same text
        one = mj.generate(tiny_llama, [p], 6, stop_tokens=[7], prompt_width=8)
        assert ids == [int(t) for t in one.tokens[0, : one.lengths[0]]]
        assert len(ids) == 6 or ids[-1] == 7  # stopped rows keep their stop token
    with pytest.raises(ValueError, match="batch and bucket must be >= 1"):
        generate_ids(tiny_llama, prompts, 6, batch=0)
