"""The input interventions of the causal robustness framework (Stolfo, Jin et al., ACL
2023) as generators of (base, intervened) word-problem pairs from `worlds`.

| type | what changes | gold result | estimand |
|---|---|---|---|
| `1b` | two operands | changes | TCE(N -> R) |
| `2` | all operands | fixed | DCE(N -> R) |
| `3` | surface text (templates, names, entity) | fixed | DCE(S -> R) |
| `4` | the operation of one relation | changes | TCE(T -> R) |
| `irrelevant` | an irrelevant sentence without a number is added | fixed | control |
| `irrelevant_number` | an irrelevant sentence with a number is added | fixed | control |

The types and their meaning follow the code comments of the reference implementation
(its README swaps 1b and 2). One- and two-step problems (`n_steps`) are supported.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from mechjax.evals import worlds as W

__all__ = ["INTERVENTIONS", "InterventionPair", "intervention_pairs"]

INTERVENTIONS = ("1b", "2", "3", "4", "irrelevant", "irrelevant_number")
_RESULT_CHANGES = {"1b": True, "2": False, "3": False, "4": True}

_IRRELEVANT = (
    "{R} likes to go for walks in the park.",
    "The weather was sunny that day.",
    "{R} is a friend of {H}.",
)
_IRRELEVANT_NUMBER = (
    "{R} is {z} years old.",
    "{R} has {z} {X}.",
    "{R} walked {z} minutes to school.",
)
_OTHER_THINGS = ("stamps", "marbles", "stickers", "coins", "shells")


@dataclasses.dataclass(frozen=True)
class InterventionPair:
    """A base problem and its intervened version; `result_changes` says whether the gold
    results differ (they do exactly when it is True)."""

    kind: str
    base: W.WordProblem
    alt: W.WordProblem
    result_changes: bool


def _resample(rng: random.Random, world: W.World, which: Sequence[int], lo: int, hi: int):
    """New values for the operands at `which` such that every quantity stays valid."""
    ops = world.operands
    for _ in range(200):
        new = list(ops)
        for i in which:
            new[i] = rng.randint(lo, hi)
        try:
            w = world.with_operands(new)
            vals = w.values()
        except ValueError:
            continue
        if all(v >= 1 for v in vals) and all(new[i] != ops[i] for i in which):
            return w
    return None


def _solve_last(v: int, op: str, target: int, lo: int, hi: int) -> int | None:
    """y with v op y = target, if it is a whole number in [lo, 10 hi]."""
    if op == "+":
        y = target - v
    elif op == "-":
        y = v - target
    elif op == "*":
        y = target // v if v and target % v == 0 else 0
    else:
        y = v // target if target and v % target == 0 else 0
    return y if lo <= y <= 10 * hi else None


def _same_result(rng: random.Random, world: W.World, lo: int, hi: int):
    """All operands changed, the result kept (type 2): draw all but the last operand,
    solve for the last."""
    ops = world.operands
    last = world.relations[-1]
    for _ in range(500):
        head = [rng.randint(lo, hi) for _ in ops[:-1]]
        try:
            v = world.with_operands(head + [ops[-1]]).values()[-2]
        except ValueError:
            continue
        y = _solve_last(v, last.op, world.answer, lo, hi)
        if y is None or y == ops[-1] or any(a == b for a, b in zip(head, ops)):
            continue
        w = world.with_operands(head + [y])
        try:
            if all(x >= 1 for x in w.values()) and w.answer == world.answer:
                return w
        except ValueError:
            continue
    return None


def _other_op(rng: random.Random, world: W.World):
    """One relation's operation changed, operands kept, result changed (type 4)."""
    steps = [k for k, r in enumerate(world.relations) if r.kind in ("transfer", "comparison")]
    rng.shuffle(steps)
    for k in steps:
        r = world.relations[k]
        choices = {"transfer": ("+", "-"), "comparison": ("+", "-", "*", "/")}[r.kind]
        for op in rng.sample([o for o in choices if o != r.op], len(choices) - 1):
            rels = list(world.relations)
            rels[k] = dataclasses.replace(r, op=op)
            w = dataclasses.replace(world, relations=tuple(rels))
            try:
                vals = w.values()
            except ValueError:
                continue
            if all(v >= 1 for v in vals) and w.answer != world.answer:
                return w
    return None


def _surface(rng: random.Random, world: W.World, style: W.Style):
    """Other templates, names and entity; same numbers (type 3)."""
    used = {world.agent} | {r.other for r in world.relations}
    names = rng.sample([a for a in W.AGENTS if a not in used], len(world.relations) + 1)
    rels = tuple(
        r if r.other is None else dataclasses.replace(r, other=names[k + 1])
        for k, r in enumerate(world.relations)
    )
    other = [c for c in range(len(W.CONTAINERS)) if c != world.container]
    w = dataclasses.replace(world, agent=names[0], relations=rels, container=rng.choice(other))
    new_style = W.Style(
        start=style.start + 1 + rng.randrange(3),
        relations=tuple(s + 1 + rng.randrange(2) for s in style.relations),
        question=style.question + 1 + rng.randrange(2),
        consistent=style.consistent,
    )
    return w, new_style


def _add_sentence(rng: random.Random, p: W.WordProblem, with_number: bool) -> W.WordProblem:
    """`p` with an irrelevant sentence inserted after one of its body sentences."""
    used = {p.world.agent} | {r.other for r in p.world.relations if r.other}
    fill = {
        "R": rng.choice([a for a in W.AGENTS if a not in used]),
        "H": p.world.agent,
        "z": rng.randint(2, 60),
        "X": rng.choice(_OTHER_THINGS),
    }
    sentence = rng.choice(_IRRELEVANT_NUMBER if with_number else _IRRELEVANT).format(**fill)
    parts = p.body.split(". ")
    at = rng.randint(1, len(parts))
    parts = [s.rstrip(".") for s in parts]
    parts.insert(at, sentence.rstrip("."))
    return dataclasses.replace(p, body=". ".join(parts) + ".")


def _one(rng, kind, n_steps, kinds, lo, hi) -> InterventionPair | None:
    world = W.sample_world(rng, n_steps, kinds, lo=lo, hi=hi)
    style = W.random_style(rng, world)
    base = W.render(world, style)
    if kind in ("irrelevant", "irrelevant_number"):
        return InterventionPair(kind, base, _add_sentence(rng, base, kind != "irrelevant"), False)
    if kind == "1b":
        which = rng.sample(range(len(world.operands)), 2)
        alt_world = _resample(rng, world, which, lo, hi)
        if alt_world is not None and alt_world.answer == world.answer:
            alt_world = None
    elif kind == "2":
        alt_world = _same_result(rng, world, lo, hi)
    elif kind == "4":
        alt_world = _other_op(rng, world)
    elif kind == "3":
        alt_world, style = _surface(rng, world, style)
    else:
        raise ValueError(f"unknown intervention {kind!r}; known: {INTERVENTIONS}")
    if alt_world is None:
        return None
    alt = W.render(alt_world, style)
    if alt.text == base.text:
        return None
    return InterventionPair(kind, base, alt, _RESULT_CHANGES[kind])


def intervention_pairs(
    kind: str,
    n: int,
    seed: int = 0,
    n_steps: int = 1,
    kinds: Sequence[str] | None = None,
    *,
    lo: int = 2,
    hi: int = 50,
) -> list[InterventionPair]:
    """`n` (base, intervened) pairs of intervention type `kind` (see `INTERVENTIONS`).

    `kinds` fixes the relation kinds of the base worlds (e.g. ["transfer",
    "comparison"]); by default they are drawn (type 4 keeps to worlds with a transfer or
    comparison, whose operation can change).
    """
    if kind not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {kind!r}; known: {INTERVENTIONS}")
    rng = random.Random(seed)
    pairs: list[InterventionPair] = []
    for _ in range(200 * n):
        k = kinds
        if k is None and kind == "4":
            k = [rng.choice(("transfer", "comparison")) for _ in range(n_steps)]
        pair = _one(rng, kind, n_steps, k, lo, hi)
        if pair is not None:
            pairs.append(pair)
            if len(pairs) == n:
                return pairs
    raise ValueError(f"could only build {len(pairs)} of {n} pairs of type {kind!r}")
