"""The rule-based teacher of Socratic CoT distillation: three formats, one arithmetic."""

import re

import pytest

from mechjax.evals import socratic as S
from mechjax.evals import worlds as W


def test_hand_made_world_in_every_format():
    w = W.World(
        agent="Alice",
        container=0,  # box / boxes / pencils
        start=4,
        relations=(
            W.Relation("rate", "*", 6),
            W.Relation("transfer", "-", 5, "Ben"),
            W.Relation("comparison", "+", 3, "Chloe"),
            W.Relation("part_whole", "+", 6, "David"),
            W.Relation("rate", "/", 4),
        ),
        start_in_containers=True,
    )
    sup = S.teach(W.render(w))
    assert [s.question for s in sup.steps] == [
        "How many pencils are in the boxes of Alice?",
        "How many pencils does Alice have after giving 5 to Ben?",
        "How many pencils does Chloe have?",
        "How many pencils do Chloe and David have together?",
        "How many boxes do Chloe and David fill?",
    ]
    eqs = ["4 * 6 = 24", "24 - 5 = 19", "19 + 3 = 22", "22 + 6 = 28", "28 / 4 = 7"]
    assert [s.solution for s in sup.steps] == eqs
    assert sup.answer == 7 and sup.answer_only == "The answer is 7."
    assert sup.cot == ". ".join(eqs) + ". The answer is 7."
    assert sup.socratic.startswith(
        "Q: How many pencils are in the boxes of Alice? A: 4 * 6 = 24. Q: How many"
    )
    assert sup.socratic.endswith("A: 28 / 4 = 7. The answer is 7.")


def test_formats_share_the_arithmetic():
    for seed in range(200):
        p = W.generate(seed, 1 + seed % 5)
        sup = S.teach(p)
        values = p.world.values()
        assert [s.value for s in sup.steps] == values[1:]
        assert sup.answer_only == f"The answer is {p.answer}."
        assert sup.cot == " ".join(f"{s.solution}." for s in sup.steps) + f" {sup.answer_only}"
        for k, s in enumerate(sup.steps):
            a, op, y, eq, v = s.solution.split()
            assert (int(a), op, int(y), eq, int(v)) == (
                values[k],
                p.ops[k],
                p.operands[k + 1],
                "=",
                values[k + 1],
            )
            assert eval(f"{a} {op.replace('/', '//')} {y}") == int(v)  # noqa: S307
        assert S.parse_answer(sup.cot) == S.parse_answer(sup.socratic) == p.answer


def test_subquestion_names_the_holder_the_problem_asks_about():
    """The last subquestion asks about whoever the problem's own question asks about."""
    for seed in range(300):
        p = W.generate(seed, 1 + seed % 4)
        last = S.teach(p).steps[-1].question
        end = W.holdings(p.world)[-1]
        assert end.entity in last, (last, p.question)
        kind = p.relations[-1]
        if kind in ("comparison", "part_whole", "transfer"):
            assert end.holder in last, (last, p.question)


def test_holdings_follow_the_rendered_text():
    w = W.World("Alice", 1, 10, (W.Relation("comparison", "*", 3, "Ben"),
                                 W.Relation("part_whole", "+", 2, "Chloe")))  # fmt: skip
    assert W.holdings(w) == [
        W.Holding("Alice", False, "apples"),
        W.Holding("Ben", False, "apples"),
        W.Holding("Ben and Chloe", True, "apples"),
    ]
    assert W.render(w).question == "How many apples do Ben and Chloe have together?"
    with pytest.raises(ValueError, match="unknown relation kind 'swap'"):
        W.holdings(W.World("Alice", 1, 10, (W.Relation("swap", "+", 3, "Ben"),)))


def test_parse_answer():
    assert S.parse_answer("3 + 4 = 7. The answer is 7.") == 7
    assert S.parse_answer(["The", "answer", "is", "12", "."]) == 12
    assert S.parse_answer("The answer is 3. no, The answer is 5.") == 5
    assert S.parse_answer("3 + 4 = 7.") is None
    assert re.fullmatch(r"The answer is \{\}\.", S.ANSWER)
