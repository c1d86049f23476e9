"""A rule-based teacher for reasoning distillation: three supervision formats per problem.

Socratic chain-of-thought distillation (Shridhar, Stolfo, Sachan; ACL Findings 2023)
trains small students on what a large teacher (GPT-3) writes for each problem: the final
answer alone, a chain of thought, or a decomposition into subquestion / solution pairs
(q_j, s_j). No such teacher is offline; for the MathWorld-style problems of
`mechjax.evals.worlds` the logical form fixes every step, so a rule-based teacher writes
all three formats from the same world, with the same arithmetic in each:

- answer only: `The answer is 21.`
- chain of thought: the step equations, then the answer: `12 - 5 = 7. 7 * 3 = 21.
  The answer is 21.`
- Socratic: one subquestion per relation, naming the quantity the step produces (who holds
  how many of what; `worlds.holdings`), answered by that step's equation:
  (`How many pencils does Alice have after giving 5 to Ben?`, `12 - 5 = 7`), ...

A step's equation starts from the previous step's value (the start quantity for the first
step), so the solver of step j needs the problem, the history and q_j, and the final
answer is the last step's value. The teacher is exact by construction; the paper filters
GPT-3's chains by their final answer, which here would keep every chain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from mechjax.evals.worlds import CONTAINERS, WordProblem, holdings

__all__ = [
    "SUBQUESTIONS",
    "Step",
    "Supervision",
    "parse_answer",
    "socratic_steps",
    "teach",
]

# (kind, op) -> subquestion; {H}: the holder before the step, {E}: the entity after it,
# {Q}: the other agent, {Cs}: the containers, {do}: the holder's verb form
SUBQUESTIONS = {
    ("transfer", "-"): "How many {E} {do} {H} have after giving {y} to {Q}?",
    ("transfer", "+"): "How many {E} {do} {H} have after getting {y} from {Q}?",
    ("comparison", "+"): "How many {E} does {Q} have?",
    ("comparison", "-"): "How many {E} does {Q} have?",
    ("comparison", "*"): "How many {E} does {Q} have?",
    ("comparison", "/"): "How many {E} does {Q} have?",
    ("part_whole", "+"): "How many {E} do {H} and {Q} have together?",
    ("rate", "*"): "How many {E} are in the {Cs} of {H}?",
    ("rate", "/"): "How many {Cs} {do} {H} fill?",
}
ANSWER = "The answer is {}."
_ANSWER = re.compile(r"The answer is (-?\d+)")


class Step(NamedTuple):
    """One subquestion, its solution (the step's equation) and the value it gives."""

    question: str
    solution: str
    value: int


class Supervision(NamedTuple):
    """The three formats the teacher writes for one problem."""

    problem: str
    answer: int
    answer_only: str
    cot: str
    steps: tuple[Step, ...]

    @property
    def socratic(self) -> str:
        """The unified Socratic output: each subquestion then its solution, then the answer."""
        pairs = " ".join(f"Q: {s.question} A: {s.solution}." for s in self.steps)
        return f"{pairs} {ANSWER.format(self.answer)}"


def socratic_steps(problem: WordProblem) -> tuple[Step, ...]:
    """The subquestion / solution pairs of a problem, one per relation of its world."""
    world = problem.world
    _, cp, _ = CONTAINERS[world.container]
    hs = holdings(world)
    values = world.values()
    steps = []
    for k, r in enumerate(world.relations):
        before, after = hs[k], hs[k + 1]
        q = SUBQUESTIONS[(r.kind, r.op)].format(
            H=before.holder,
            E=after.entity,
            Q=r.other,
            Cs=cp,
            y=r.operand,
            do="do" if before.plural else "does",
        )
        solution = f"{values[k]} {r.op} {r.operand} = {values[k + 1]}"
        steps.append(Step(q, solution, values[k + 1]))
    return tuple(steps)


def teach(problem: WordProblem) -> Supervision:
    """All three supervision formats of `problem` (the same arithmetic in each)."""
    steps = socratic_steps(problem)
    answer = ANSWER.format(problem.answer)
    cot = " ".join(f"{s.solution}." for s in steps)
    return Supervision(
        problem=problem.text,
        answer=problem.answer,
        answer_only=answer,
        cot=f"{cot} {answer}".strip(),
        steps=steps,
    )


def parse_answer(text: str | Sequence[str]) -> int | None:
    """The number after the last "The answer is" of a student's output (None if absent)."""
    if not isinstance(text, str):
        text = " ".join(text)
    found = _ANSWER.findall(text)
    return int(found[-1]) if found else None
