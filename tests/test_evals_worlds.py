"""The MathWorld-style word-problem generator: answers, equations, operands, seeds."""

import re

import pytest

from mechjax.evals import worlds as W

SEEDS = range(300)


def _by_hand(start, ops, operands):
    v = start
    for op, y in zip(ops, operands):
        if op == "+":
            v += y
        elif op == "-":
            v -= y
        elif op == "*":
            v *= y
        else:
            assert v % y == 0, "division must be exact"
            v //= y
    return v


@pytest.mark.parametrize("n_steps", [1, 2])
def test_gold_answer_is_what_the_equation_gives(n_steps):
    for seed in SEEDS:
        p = W.generate(seed, n_steps)
        assert len(p.relations) == n_steps
        assert eval(p.equation) == p.answer, (seed, p.equation, p.answer)  # noqa: S307
        assert p.answer == _by_hand(p.operands[0], p.ops, p.operands[1:]), seed
        assert p.answer >= 0 and float(p.answer).is_integer()


@pytest.mark.parametrize("n_steps", [1, 2])
def test_rendering_mentions_every_operand(n_steps):
    for seed in SEEDS:
        p = W.generate(seed, n_steps)
        numbers = [int(t) for t in re.findall(r"\d+", p.body)]
        # every operand is stated (1/k states k), and no other number than "1" of "1/k"
        for y in p.operands:
            assert y in numbers, (seed, y, p.body)
        assert set(numbers) - set(p.operands) <= {1}, (seed, p.body)
        assert str(p.answer) not in re.findall(r"\d+", p.question)


def test_seeds_reproduce_and_differ():
    a = [W.generate(s, 2).text for s in range(50)]
    b = [W.generate(s, 2).text for s in range(50)]
    assert a == b
    assert len(set(a)) > 45
    assert [p.text for p in W.generate_many(5, seed=3)] == [
        p.text for p in W.generate_many(5, seed=3)
    ]
    assert W.generate_many(5, seed=3)[0].text != W.generate_many(5, seed=4)[0].text


@pytest.mark.parametrize("kind", W.RELATIONS)
def test_every_relation_renders_through_several_templates(kind):
    bodies = set()
    for seed in range(200):
        p = W.generate(seed, 1, kinds=[kind])
        assert p.relations == (kind,)
        assert eval(p.equation) == p.answer  # noqa: S307
        bodies.add(p.body.split(". ", 1)[1].split(str(p.operands[1]))[0])
    assert len(bodies) >= 3, bodies


def test_hand_made_world():
    w = W.World(
        agent="Alice",
        container=0,  # box / boxes / pencils
        start=4,
        relations=(W.Relation("rate", "*", 6), W.Relation("transfer", "-", 5, "Ben")),
        start_in_containers=True,
    )
    p = W.render(w, W.Style(start=0, relations=(0, 0), question=0))
    assert p.text == (
        "Alice has 4 boxes. Each box holds 6 pencils. Alice gave 5 pencils to Ben. "
        "How many pencils does Alice have now?"
    )
    assert (p.answer, p.equation, p.operands) == (19, "(4 * 6) - 5", (4, 6, 5))


def test_comparison_changes_the_holder_and_part_whole_joins():
    w = W.World("Alice", 1, 10, (W.Relation("comparison", "*", 3, "Ben"),))
    assert W.render(w).text == (
        "Alice has 10 apples. Ben has 3 times as many apples as Alice. "
        "How many apples does Ben have?"
    )
    inc = W.render(w, W.Style(consistent=False)).text
    assert "Alice has 1/3 the amount of apples as Ben." in inc
    w = W.World("Alice", 1, 10, (W.Relation("part_whole", "+", 7, "Ben"),))
    assert W.render(w).question == "How many apples do Alice and Ben have together?"
    assert W.render(w).answer == 17


def test_with_operands_and_bad_division():
    w = W.World("Alice", 1, 10, (W.Relation("comparison", "/", 5, "Ben"),))
    assert w.answer == 2
    assert w.with_operands([20, 4]).answer == 5
    with pytest.raises(ValueError, match="whole number"):
        _ = w.with_operands([21, 4]).answer
    with pytest.raises(ValueError, match="operands expected"):
        w.with_operands([1, 2, 3])
