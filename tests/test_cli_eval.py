"""`mechjax eval questions` and `mechjax eval hle`: the question file, the metrics as HLE
computes them, unparseable answers counted (never dropped), and clear errors."""

import json

import pytest

import mechjax as mj
import mechjax.generation as G
from mechjax.cli import evaluate as ev
from mechjax.cli.main import main
from mechjax.evals import hle


def test_questions_file_is_valid_for_the_runner(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    assert main(["eval", "questions", str(path), "--n", "10", "--choices"]) == 0
    rows = hle.load_jsonl(path)
    assert len(rows) == 10 and "wrote 10 questions (5 multiple choice)" in capsys.readouterr().out
    for r in rows:
        if r["answer_type"] == "multipleChoice":
            assert len(r["choices"]) == 4 and r["answer"] in "ABCD"
            assert len(set(r["choices"])) == 4
        else:
            assert r["answer"].isdigit()
    assert ev.word_problem_questions(10, 0, True) == rows  # from the seed


@pytest.mark.slow
def test_hle_scores_every_question(tmp_path, monkeypatch, capsys, tiny_smollm2):
    rows = ev.word_problem_questions(4, seed=1)
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    canned = [
        f" because.\nAnswer: {rows[0]['answer']}\nConfidence: 80%",  # right, 80%
        " because.\nAnswer: 99999\nConfidence: 30%",  # wrong, 30%
        " I do not know",  # unparseable: wrong, 100%
        f" so.\nAnswer: {rows[3]['answer']}",  # right, missing confidence: 100%
    ]
    real = G.generate_texts

    def fake(model, prompts, max_new_tokens, **kw):
        real(model, prompts, 2, **kw)  # the real generation runs
        return [canned[[hle.build_prompt(r) for r in rows].index(p)] for p in prompts]

    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    monkeypatch.setattr(G, "generate_texts", fake)
    out = tmp_path / "m.json"
    assert main(["eval", "hle", str(path), "smollm2-135m", "--batch", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert m["n"] == 4 and m["n_correct"] == 2 and m["n_unparseable"] == 1
    assert m["n_missing_confidence"] == 2
    assert m["accuracy"] == pytest.approx(50.0)
    # fewer than 100 questions: HLE's loop has no bin to sum; the fixed variant has one
    conf, right = [0.8, 0.3, 1.0, 1.0], [1, 0, 0, 1]
    one_bin = abs(sum(conf) / 4 - sum(right) / 4)  # sqrt((4/4) * gap^2)
    assert m["calibration_error_fixed"] == pytest.approx(100 * one_bin)
    assert m["calibration_error_hle"] != m["calibration_error_hle"]  # nan
    assert "50.00% +/- 49.00" in printed and "unparseable        1" in printed
    assert [q["correct"] for q in res["questions"]] == [True, False, False, True]


def test_hle_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "2 + 2?"}\n')
    assert main(["eval", "hle", str(bad), "smollm2-135m"]) == 2
    assert "line 1 has no 'answer' field" in capsys.readouterr().err
    assert main(["eval", "hle", str(tmp_path / "none.jsonl"), "smollm2-135m"]) == 2
    assert "no question file" in capsys.readouterr().err
