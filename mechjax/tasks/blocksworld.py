"""Blocksworld (the four-operator domain of PlanBench, Valmeekam et al. 2023) with
renameable action and predicate names: a simulator, a plan validator, an optimal planner
for small instances, random walks, and text rendering and parsing under a naming scheme.

    s0 = initial_state([["b", "a"], ["c"]])           # a on b; c on the table
    s1 = apply(s0, Action("unstack", "a", "b"))
    validate(s0, plan, goal)                           # Validation(valid, steps, ...)
    MYSTERY.render_state(s1)                           # "pain a; planet b; ..."

State: a frozenset of facts, each a tuple: ("on", x, y), ("ontable", x), ("clear", x),
("holding", x), ("handempty",). Actions and their preconditions / effects:

| action      | needs                         | adds                          | deletes           |
|-------------|-------------------------------|-------------------------------|-------------------|
| pick-up x   | clear x, ontable x, handempty | holding x                     | the three needs   |
| put-down x  | holding x                     | ontable x, clear x, handempty | holding x         |
| stack x y   | holding x, clear y            | on x y, clear x, handempty    | the two needs     |
| unstack x y | on x y, clear x, handempty    | holding x, clear y            | the three needs   |

A `Naming` maps the four actions and five predicates to words. `STANDARD` uses the PDDL
names; `MYSTERY` is PlanBench's Mystery Blocksworld (attack, succumb, overcome, feast;
craves, province, planet, harmony, pain); `random_naming(seed)` draws unrelated words.
Rendering is the same under every naming ("<verb> <block> [<block>]" and facts joined by
"; "), so sequences under two namings differ only in the names.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from mechjax.errors import InputError

ACTIONS = ("pick-up", "put-down", "stack", "unstack")
PREDICATES = ("on", "clear", "ontable", "handempty", "holding")
ARITY = {"pick-up": 1, "put-down": 1, "stack": 2, "unstack": 2}

Fact = tuple
State = frozenset


class Action(NamedTuple):
    """An action: its (standard) name and its block arguments."""

    name: str
    x: str
    y: str | None = None

    @property
    def args(self) -> tuple[str, ...]:
        return (self.x,) if self.y is None else (self.x, self.y)


class IllegalAction(InputError):
    """An action whose preconditions do not hold in the state."""


# ----------------------------------------------------------------------------- simulator


def initial_state(towers: Sequence[Sequence[str]], holding: str | None = None) -> State:
    """The state with the given towers (bottom first) and the hand empty or holding one
    block."""
    facts: set[Fact] = set()
    seen: list[str] = []
    for tower in towers:
        if not tower:
            raise InputError("a tower needs at least one block")
        facts.add(("ontable", tower[0]))
        for lower, upper in zip(tower, tower[1:]):
            facts.add(("on", upper, lower))
        facts.add(("clear", tower[-1]))
        seen += list(tower)
    if holding is not None:
        facts.add(("holding", holding))
        seen.append(holding)
    else:
        facts.add(("handempty",))
    if len(seen) != len(set(seen)):
        raise InputError(f"a block appears twice in {towers!r} (holding {holding!r})")
    return frozenset(facts)


def blocks_of(state: State) -> list[str]:
    """The blocks of a state, sorted."""
    return sorted({b for f in state for b in f[1:]})


def _needs(a: Action) -> set[Fact]:
    if a.name == "pick-up":
        return {("clear", a.x), ("ontable", a.x), ("handempty",)}
    if a.name == "put-down":
        return {("holding", a.x)}
    if a.name == "stack":
        return {("holding", a.x), ("clear", a.y)}
    return {("on", a.x, a.y), ("clear", a.x), ("handempty",)}


def _effects(a: Action) -> tuple[set[Fact], set[Fact]]:
    if a.name == "pick-up":
        return {("holding", a.x)}, {("ontable", a.x), ("clear", a.x), ("handempty",)}
    if a.name == "put-down":
        return {("ontable", a.x), ("clear", a.x), ("handempty",)}, {("holding", a.x)}
    if a.name == "stack":
        return {("on", a.x, a.y), ("clear", a.x), ("handempty",)}, {
            ("holding", a.x),
            ("clear", a.y),
        }
    return {("holding", a.x), ("clear", a.y)}, {("on", a.x, a.y), ("clear", a.x), ("handempty",)}


def _check(a: Action) -> None:
    if a.name not in ACTIONS:
        raise InputError(f"unknown action {a.name!r}; valid: {', '.join(ACTIONS)}")
    if len(a.args) != ARITY[a.name] or (a.y is not None and a.y == a.x):
        raise InputError(f"{a.name} takes {ARITY[a.name]} distinct block(s), got {a.args}")


def is_legal(state: State, a: Action) -> bool:
    """Whether `a`'s preconditions hold in `state`."""
    _check(a)
    return _needs(a) <= state


def apply(state: State, a: Action) -> State:
    """The state after `a`; `IllegalAction` naming the missing preconditions if it cannot."""
    _check(a)
    missing = _needs(a) - state
    if missing:
        raise IllegalAction(f"{a.name} {' '.join(a.args)} needs {sorted(missing)}")
    add, delete = _effects(a)
    return frozenset((state - delete) | add)


def legal_actions(state: State) -> list[Action]:
    """Every legal action in `state`, in a fixed order."""
    bs = blocks_of(state)
    cands = [Action(n, x) for n in ("pick-up", "put-down") for x in bs]
    cands += [Action(n, x, y) for n in ("stack", "unstack") for x in bs for y in bs if x != y]
    return [a for a in cands if _needs(a) <= state]


class Validation(NamedTuple):
    """A plan's check: legal throughout and reaching the goal; where it failed, if it did."""

    valid: bool
    legal: bool
    reaches_goal: bool
    failed_step: int | None  # index of the first illegal action
    reason: str
    final: State


def validate(state: State, plan: Iterable[Action], goal: Iterable[Fact]) -> Validation:
    """Run `plan` from `state`: valid when every action is legal and the final state
    holds every goal fact."""
    s = state
    for i, a in enumerate(plan):
        if not is_legal(s, a):
            missing = sorted(_needs(a) - s)
            return Validation(False, False, False, i, f"step {i}: {a.name} needs {missing}", s)
        s = apply(s, a)
    lacking = sorted(set(goal) - s)
    if lacking:
        return Validation(False, True, False, None, f"the goal lacks {lacking}", s)
    return Validation(True, True, True, None, "", s)


def plan_bfs(state: State, goal: Iterable[Fact], max_states: int = 200_000) -> list[Action]:
    """A shortest plan from `state` to a state holding every goal fact (breadth-first;
    Blocksworld with n blocks has fewer than (2n)! states, fine for n <= 6)."""
    goal = frozenset(goal)
    parents: dict[State, tuple[State, Action] | None] = {state: None}
    queue = deque([state])
    while queue:
        s = queue.popleft()
        if goal <= s:
            plan: list[Action] = []
            while parents[s] is not None:
                prev, a = parents[s]  # type: ignore[misc]
                plan.append(a)
                s = prev
            return plan[::-1]
        for a in legal_actions(s):
            t = apply(s, a)
            if t not in parents:
                parents[t] = (s, a)
                queue.append(t)
                if len(parents) > max_states:
                    raise InputError(f"more than {max_states} states searched; fewer blocks?")
    raise InputError(f"the goal {sorted(goal)} cannot be reached")


def random_state(blocks: Sequence[str], rng: random.Random) -> State:
    """A uniformly shuffled arrangement of `blocks` into random towers, hand empty."""
    order = list(blocks)
    rng.shuffle(order)
    towers: list[list[str]] = []
    for b in order:
        if towers and rng.random() < 0.5:
            rng.choice(towers).append(b)
        else:
            towers.append([b])
    return initial_state(towers)


def random_walk(state: State, steps: int, rng: random.Random) -> list[tuple[State, Action]]:
    """`steps` random legal actions from `state`, each with the state it was taken in;
    an action that undoes the previous one is avoided when another is legal."""
    out: list[tuple[State, Action]] = []
    s, prev = state, None
    for _ in range(steps):
        acts = legal_actions(s)
        fresh = [a for a in acts if prev is None or a != _undo(prev)]
        a = rng.choice(fresh or acts)
        out.append((s, a))
        s, prev = apply(s, a), a
    return out


def _undo(a: Action) -> Action:
    return {
        "pick-up": Action("put-down", a.x),
        "put-down": Action("pick-up", a.x),
        "stack": Action("unstack", a.x, a.y),
        "unstack": Action("stack", a.x, a.y),
    }[a.name]


# ------------------------------------------------------------------------------ namings

# PlanBench's Mystery Blocksworld names
_MYSTERY = {
    "pick-up": "attack", "put-down": "succumb", "stack": "overcome", "unstack": "feast",
    "on": "craves", "clear": "province", "ontable": "planet", "handempty": "harmony",
    "holding": "pain",
}  # fmt: skip
WORDS = (
    "anchor", "bramble", "cobalt", "drizzle", "ember", "falcon", "garnet", "harbor",
    "island", "juniper", "kettle", "lantern", "marble", "nectar", "orchid", "pepper",
    "quartz", "ripple", "saddle", "thistle", "umber", "velvet", "walnut", "yonder",
    "zephyr", "basalt", "cinder", "dapple", "fennel", "gravel", "hollow", "meadow",
)  # fmt: skip


class Naming(NamedTuple):
    """Words for the four actions and five predicates (keyed by their standard names)."""

    name: str
    words: dict

    def word(self, concept: str) -> str:
        return self.words[concept]

    def render_action(self, a: Action) -> str:
        return " ".join([self.words[a.name], *a.args])

    def render_fact(self, f: Fact) -> str:
        return " ".join([self.words[f[0]], *f[1:]])

    def render_state(self, state: State) -> str:
        """Facts in a fixed order: the hand, then on, ontable, clear (blocks sorted)."""
        order = {"holding": 0, "handempty": 0, "on": 1, "ontable": 2, "clear": 3}
        facts = sorted(state, key=lambda f: (order[f[0]], f[1:]))
        return "; ".join(self.render_fact(f) for f in facts)

    def parse_action(self, text: str) -> Action:
        """The action a rendered line names (`InputError` if no verb of this naming)."""
        parts = text.strip().rstrip(".").split()
        inverse = {self.words[a]: a for a in ACTIONS}
        if not parts or parts[0] not in inverse:
            raise InputError(
                f"{text!r} does not start with an action of naming {self.name!r} "
                f"({', '.join(self.words[a] for a in ACTIONS)})"
            )
        name = inverse[parts[0]]
        args = parts[1 : 1 + ARITY[name]]
        if len(args) != ARITY[name]:
            raise InputError(f"{parts[0]} takes {ARITY[name]} block(s): {text!r}")
        return Action(name, *args)


STANDARD = Naming("standard", {c: c for c in ACTIONS + PREDICATES})
MYSTERY = Naming("mystery", dict(_MYSTERY))


def random_naming(seed: int, words: Sequence[str] = WORDS) -> Naming:
    """Nine distinct words drawn from `words` for the nine concepts."""
    concepts = ACTIONS + PREDICATES
    if len(set(words)) < len(concepts):
        raise InputError(f"a naming needs {len(concepts)} distinct words")
    picked = random.Random(seed).sample(sorted(set(words)), len(concepts))
    return Naming(f"random-{seed}", dict(zip(concepts, picked)))
