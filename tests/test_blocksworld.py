"""Blocksworld: the four operators' preconditions and effects, the validator, the optimal
planner against a brute-force search, random walks, and renaming (render and parse)."""

import itertools
import random

import pytest

from mechjax.errors import InputError
from mechjax.tasks import blocksworld as B


def test_operators_follow_their_preconditions_and_effects():
    s0 = B.initial_state([["b", "a"], ["c"]])  # a on b, b and c on the table
    assert s0 == {("on", "a", "b"), ("ontable", "b"), ("ontable", "c"), ("clear", "a"),
                  ("clear", "c"), ("handempty",)}  # fmt: skip
    s1 = B.apply(s0, B.Action("unstack", "a", "b"))
    assert s1 == {("holding", "a"), ("ontable", "b"), ("ontable", "c"), ("clear", "b"),
                  ("clear", "c")}  # fmt: skip
    s2 = B.apply(s1, B.Action("stack", "a", "c"))
    assert ("on", "a", "c") in s2 and ("clear", "c") not in s2 and ("handempty",) in s2
    s3 = B.apply(B.apply(s2, B.Action("pick-up", "b")), B.Action("put-down", "b"))
    assert s3 == s2
    with pytest.raises(B.IllegalAction, match=r"pick-up b needs \[\('handempty',\)\]"):
        B.apply(s1, B.Action("pick-up", "b"))
    with pytest.raises(InputError, match="unknown action"):
        B.apply(s0, B.Action("jump", "a"))
    with pytest.raises(InputError, match="2 distinct"):
        B.apply(s0, B.Action("stack", "a", "a"))
    assert B.legal_actions(s0) == [B.Action("pick-up", "c"), B.Action("unstack", "a", "b")]
    # every legal action keeps exactly one hand fact and one place per block
    rng = random.Random(0)
    for s, a in B.random_walk(B.random_state("abcde", rng), 200, rng):
        t = B.apply(s, a)
        assert sum(f[0] in ("holding", "handempty") for f in t) == 1
        for b in "abcde":
            places = [f for f in t if f[0] in ("on", "ontable", "holding") and f[1] == b]
            assert len(places) == 1, (t, b)


def test_validator_and_optimal_planner():
    s0 = B.initial_state([["a", "b", "c"]])  # c on b on a
    goal = {("on", "a", "b"), ("on", "b", "c")}  # reverse the tower
    plan = B.plan_bfs(s0, goal)
    assert len(plan) == 6 and B.validate(s0, plan, goal).valid
    v = B.validate(s0, plan[:-1], goal)
    assert v.legal and not v.reaches_goal and "lacks" in v.reason
    bad = B.validate(s0, [B.Action("pick-up", "a")], goal)
    assert not bad.legal and bad.failed_step == 0 and "needs" in bad.reason
    # no plan shorter than BFS's: every sequence of up to 5 legal actions misses the goal
    frontier = {s0}
    for _ in range(5):
        frontier = {B.apply(s, a) for s in frontier for a in B.legal_actions(s)}
        assert not any(goal <= s for s in frontier)


def test_namings_render_and_parse_the_same_sequences():
    s = B.initial_state([["b", "a"], ["c"]])
    assert B.STANDARD.render_state(s) == "handempty; on a b; ontable b; ontable c; clear a; clear c"
    assert (
        B.MYSTERY.render_state(s)
        == "harmony; craves a b; planet b; planet c; province a; province c"
    )
    a = B.Action("unstack", "a", "b")
    assert B.MYSTERY.render_action(a) == "feast a b"
    assert B.MYSTERY.parse_action("feast a b.") == a
    with pytest.raises(InputError, match="attack, succumb, overcome, feast"):
        B.MYSTERY.parse_action("unstack a b")
    with pytest.raises(InputError, match="takes 2"):
        B.MYSTERY.parse_action("feast a")
    r1, r2 = B.random_naming(1), B.random_naming(2)
    assert r1.words != r2.words and len(set(r1.words.values())) == 9
    assert set(r1.words.values()) <= set(B.WORDS) and r1 == B.random_naming(1)
    for n in (B.STANDARD, B.MYSTERY, r1):
        for act in itertools.islice(B.legal_actions(B.apply(s, a)), 5):
            assert n.parse_action(n.render_action(act)) == act
