"""Paired problem sets of the cognitive-bias tests (Opedal, Stolfo et al., ICML 2024).

Each test is a list of `ProblemPair`s whose two problems have the same gold answer and
differ only in the feature under test (condition `a` is the one children find easier):

- `consistency_pairs` (text comprehension): the comparison sentence is consistent
  ("B has 3 times as many apples as A") in `a` and inconsistent ("A has 1/3 the amount
  of apples as B") in `b`; same world, same answer.
- `transfer_comparison_pairs` (solution planning): the same arithmetic stated as
  transfers in `a` ("B gave A 15 apples") and as comparisons in `b` ("B has 15 more
  apples than A"); same operands, same answer.
- `carry_pairs` (execution): one addition or subtraction of 3-digit numbers with the same
  result, without carries/borrows in `a` and with `n_carries` (1 or 2) in `b`.

The paper renders its problems through templates and then paraphrases them with an
LLM; here only the template versions exist (no paraphrase model offline). Its carry
items come from longer problems; here a carry item is a one-step problem.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np

from mechjax.evals import worlds as W

__all__ = [
    "ProblemPair",
    "TESTS",
    "carry_pairs",
    "consistency_pairs",
    "count_carries",
    "make_pairs",
    "transfer_comparison_pairs",
]

TESTS = ("consistency", "transfer_comparison", "carry")


@dataclasses.dataclass(frozen=True)
class ProblemPair:
    """Two problems of one test with the same gold answer (`a`: easier condition)."""

    test: str
    a: W.WordProblem
    b: W.WordProblem
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def answer(self) -> int:
        if self.a.answer != self.b.answer:
            raise ValueError(f"pair answers differ: {self.a.answer} vs {self.b.answer}")
        return self.a.answer


def count_carries(x: int, y: int, op: str) -> int:
    """Carries of x + y (op "+") or borrows of x - y (op "-", x >= y), column by column."""
    if x < 0 or y < 0 or (op == "-" and x < y):
        raise ValueError(f"count_carries needs non-negative x, y (and x >= y for -): {x}, {y}")
    carries, carry = 0, 0
    while x or y:
        dx, dy = x % 10, y % 10
        if op == "+":
            carry = 1 if dx + dy + carry >= 10 else 0
        elif op == "-":
            carry = 1 if dx - dy - carry < 0 else 0
        else:
            raise ValueError(f"op must be '+' or '-', got {op!r}")
        carries += carry
        x, y = x // 10, y // 10
    return carries


def consistency_pairs(
    n: int, seed: int = 0, n_steps: int = 2, ops: tuple[str, ...] = ("+", "-", "*", "/")
) -> list[ProblemPair]:
    """Consistent (a) vs inconsistent (b) comparison wording; the comparison is the last
    of `n_steps` relations (the ones before it: transfers and part-whole)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        op = ops[i % len(ops)]
        kinds = [rng.choice(("transfer", "part_whole")) for _ in range(n_steps - 1)]
        world = W.sample_world(rng, n_steps, kinds + ["comparison"], [None] * len(kinds) + [op])
        style = W.random_style(rng, world)
        a = W.render(world, dataclasses.replace(style, consistent=True))
        b = W.render(world, dataclasses.replace(style, consistent=False))
        pairs.append(ProblemPair("consistency", a, b, {"op": op}))
    return pairs


def transfer_comparison_pairs(
    n: int, seed: int = 0, n_steps: int = 1, ops: tuple[str, ...] = ("+", "-")
) -> list[ProblemPair]:
    """Every relation a transfer (a) or a comparison (b), with the same ops and operands."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        step_ops = [rng.choice(ops) for _ in range(n_steps)]
        wa = W.sample_world(rng, n_steps, ["transfer"] * n_steps, step_ops)
        rels = tuple(dataclasses.replace(r, kind="comparison") for r in wa.relations)
        wb = dataclasses.replace(wa, relations=rels)
        style = W.random_style(rng, wa)
        pairs.append(
            ProblemPair(
                "transfer_comparison", W.render(wa, style), W.render(wb, style), {"ops": step_ops}
            )
        )
    return pairs


def _carries_all(x: np.ndarray, y: np.ndarray, op: str) -> np.ndarray:
    """`count_carries` of many 3-digit pairs at once (column by column)."""
    count, carry = np.zeros(x.shape, np.int64), np.zeros(x.shape, np.int64)
    for col in range(3):
        dx, dy = (x // 10**col) % 10, (y // 10**col) % 10
        carry = (dx + dy + carry >= 10) if op == "+" else (dx - dy - carry < 0)
        carry = carry.astype(np.int64)
        count += carry
    return count


def _operand_pair(rng: random.Random, result: int, op: str, carries: int):
    """A 3-digit (x, y) with x op y = result and exactly `carries` carries, or None."""
    x = np.arange(100, 1000)
    y = result - x if op == "+" else x - result
    ok = (y >= 100) & (y <= 999)
    x, y = x[ok], y[ok]
    hit = np.flatnonzero(_carries_all(x, y, op) == carries)
    if hit.size == 0:
        return None
    i = int(hit[rng.randrange(hit.size)])
    return int(x[i]), int(y[i])


def carry_pairs(
    n: int, seed: int = 0, ops: tuple[str, ...] = ("+", "-"), n_carries: tuple[int, ...] = (1, 2)
) -> list[ProblemPair]:
    """No carry (a) vs `k` carries/borrows (b), 3-digit operands, the same result.

    Additions are a part-whole or a received transfer, subtractions a given transfer;
    the two problems of a pair share agents, entity and wording.
    """
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        i = len(pairs)
        op, k = ops[i % len(ops)], n_carries[(i // len(ops)) % len(n_carries)]
        result = rng.randint(200, 999) if op == "+" else rng.randint(1, 799)
        plain, carried = _operand_pair(rng, result, op, 0), _operand_pair(rng, result, op, k)
        if plain is None or carried is None:
            continue
        kind = rng.choice(("part_whole", "transfer")) if op == "+" else "transfer"
        world = W.sample_world(rng, 1, [kind], [op]).with_operands(plain)
        style = W.random_style(rng, world)
        a = W.render(world, style)
        b = W.render(world.with_operands(carried), style)
        pairs.append(ProblemPair("carry", a, b, {"op": op, "n_carries": k}))
    return pairs


def make_pairs(test: str, n: int, seed: int = 0, **kw) -> list[ProblemPair]:
    """The pairs of one of `TESTS`."""
    makers = {
        "consistency": consistency_pairs,
        "transfer_comparison": transfer_comparison_pairs,
        "carry": carry_pairs,
    }
    if test not in makers:
        raise ValueError(f"unknown test {test!r}; known: {TESTS}")
    return makers[test](n, seed, **kw)
