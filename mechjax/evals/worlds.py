"""A MathWorld-style generator of arithmetic word problems, reproducible from a seed.

Following the design of the MathWorld formalism (Opedal et al. 2023) that the
cognitive-bias study (Opedal, Stolfo et al., ICML 2024) builds its problems with: a
*world* holds agents, an entity and quantities; each sentence states one relation
between containers (agent, entity, quantity):

- transfer: the holder gives (-) or receives (+) y entities; the holder keeps them;
- comparison: another agent has y more (+) / fewer (-), y times as many (*) or 1/y as
  many (/) as the holder, and becomes the holder;
- part-whole: another agent has y entities; the holder becomes the two together (+);
- rate: each container holds y entities (containers -> entities, *), or the entities are
  packed y to a container (entities -> containers, /).

A `World` is the logical form (start quantity and a chain of `Relation`s); `render`
turns it into text through a `Style` (one template index per sentence, the phrasing of
comparisons); `generate` draws both from a seed. The answer, the equation and the
operands come from the world, never from the text. This is an independent
implementation of the design; no code or data of the reference repository is used.
"""

from __future__ import annotations

import dataclasses
import random
from typing import NamedTuple, Sequence

from mechjax.evals import templates as T

__all__ = [
    "AGENTS",
    "CONTAINERS",
    "Holding",
    "RELATIONS",
    "Relation",
    "Style",
    "World",
    "WordProblem",
    "apply_op",
    "generate",
    "generate_many",
    "holdings",
    "random_style",
    "render",
    "sample_world",
]

AGENTS = (
    "Alice", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Isabella",
    "Jonas", "Keiko", "Liam", "Maya", "Noah", "Olivia", "Pedro", "Quinn", "Rosa",
    "Samir", "Tara", "Umar", "Vera", "Wei", "Yara",
)  # fmt: skip
# (container singular, container plural, content plural)
CONTAINERS = (
    ("box", "boxes", "pencils"),
    ("bag", "bags", "apples"),
    ("basket", "baskets", "eggs"),
    ("shelf", "shelves", "books"),
    ("pack", "packs", "cards"),
    ("jar", "jars", "cookies"),
    ("crate", "crates", "oranges"),
    ("tin", "tins", "buttons"),
)
RELATIONS = ("transfer", "comparison", "part_whole", "rate")
_OPS = {"transfer": ("+", "-"), "comparison": ("+", "-", "*", "/"), "part_whole": ("+",)}


def apply_op(v: int, op: str, y: int) -> int:
    """v op y for +, -, *, and exact division /."""
    if op == "/" and v % y:
        raise ValueError(f"{v} / {y} is not a whole number")
    return {"+": v + y, "-": v - y, "*": v * y, "/": v // y if y else 0}[op]


@dataclasses.dataclass(frozen=True)
class Relation:
    """One relation: its kind, operation, operand, and the other agent (if any)."""

    kind: str
    op: str
    operand: int
    other: str | None = None


@dataclasses.dataclass(frozen=True)
class World:
    """The logical form of a problem: who holds how many of what, then the relations.

    `container` is an index into `CONTAINERS`; `start_in_containers` says whether the
    start quantity counts containers (boxes) rather than their content (pencils).
    """

    agent: str
    container: int
    start: int
    relations: tuple[Relation, ...]
    start_in_containers: bool = False

    @property
    def operands(self) -> tuple[int, ...]:
        return (self.start,) + tuple(r.operand for r in self.relations)

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(r.op for r in self.relations)

    def values(self) -> list[int]:
        """The quantity after each step (the start first, the answer last)."""
        out = [self.start]
        for r in self.relations:
            out.append(apply_op(out[-1], r.op, r.operand))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    @property
    def equation(self) -> str:
        eq = str(self.start)
        for i, r in enumerate(self.relations):
            eq = f"{eq} {r.op} {r.operand}" if i == 0 else f"({eq}) {r.op} {r.operand}"
        return eq

    def with_operands(self, operands: Sequence[int]) -> World:
        """The same world with other numbers (start first, then one per relation)."""
        if len(operands) != len(self.operands):
            raise ValueError(f"{len(self.operands)} operands expected, got {len(operands)}")
        rels = tuple(
            dataclasses.replace(r, operand=int(y)) for r, y in zip(self.relations, operands[1:])
        )
        return dataclasses.replace(self, start=int(operands[0]), relations=rels)


@dataclasses.dataclass(frozen=True)
class Style:
    """How a world is worded: a template index for the start, each relation and the
    question (taken modulo the number of templates), and the comparison phrasing."""

    start: int = 0
    relations: tuple[int, ...] = ()
    question: int = 0
    consistent: bool = True


@dataclasses.dataclass(frozen=True)
class WordProblem:
    """A rendered problem with its gold answer, equation and operands."""

    body: str
    question: str
    answer: int
    equation: str
    operands: tuple[int, ...]
    ops: tuple[str, ...]
    relations: tuple[str, ...]
    world: World
    style: Style

    @property
    def text(self) -> str:
        return f"{self.body} {self.question}"


def _holder_forms(plural: bool) -> dict[str, str]:
    if plural:
        return {"has": "have", "does": "do", "do": "do", "own": "own"}
    return {"has": "has", "does": "does", "do": "does", "own": "owns"}


class Holding(NamedTuple):
    """Who holds the quantity of a world at one point, and what it counts (plural noun)."""

    holder: str
    plural: bool  # the holder is two agents ("A and B"), after a part-whole step
    entity: str


def holdings(world: World) -> list[Holding]:
    """The holding before the first relation, then after each one (`len(relations) + 1`):
    a comparison hands the quantity to the other agent, a part-whole step joins the two,
    a rate turns containers into their content (*) or the content into containers (/)."""
    _, cp, content = CONTAINERS[world.container]
    h = Holding(world.agent, False, cp if world.start_in_containers else content)
    out = [h]
    for r in world.relations:
        if r.kind == "comparison":
            h = Holding(str(r.other), False, h.entity)
        elif r.kind == "part_whole":
            h = Holding(f"{h.holder} and {r.other}", True, h.entity)
        elif r.kind == "rate":
            h = h._replace(entity=content if r.op == "*" else cp)
        elif r.kind != "transfer":
            raise ValueError(f"unknown relation kind {r.kind!r}; known: {RELATIONS}")
        out.append(h)
    return out


def render(world: World, style: Style = Style()) -> WordProblem:
    """The text of `world` in `style`; answer, equation and operands from the world."""
    cs, cp, content = CONTAINERS[world.container]
    hs = holdings(world)
    pick = lambda options, i: options[i % len(options)]
    fill = {"H": world.agent, "v": world.start, "E": hs[0].entity, **_holder_forms(False)}
    sentences = [pick(T.START, style.start).format(**fill)]
    for k, r in enumerate(world.relations):
        h = hs[k]
        idx = style.relations[k] if k < len(style.relations) else 0
        fill = {"H": h.holder, "Q": r.other, "y": r.operand, "E": h.entity, "C": cs, "Cs": cp}
        fill.update(_holder_forms(h.plural))
        if r.kind == "transfer":
            text = pick(T.TRANSFER[r.op], idx)
        elif r.kind == "comparison":
            text = pick(T.COMPARISON[(r.op, style.consistent)], idx)
        elif r.kind == "part_whole":
            text = pick(T.PART_WHOLE, idx)
        else:  # rate (holdings() has refused any other kind)
            fill["E"] = content if r.op == "*" else h.entity
            text = pick(T.RATE[r.op], idx)
        s = text.format(**fill)
        sentences.append(s[0].upper() + s[1:])
    last = world.relations[-1].kind if world.relations else ""
    end = hs[-1]
    now = " now" if last == "transfer" else (" together" if end.plural else "")
    q = pick(T.QUESTION, style.question)
    q = q.format(H=end.holder, E=end.entity, now=now, **_holder_forms(end.plural))
    return WordProblem(
        body=" ".join(sentences),
        question=q,
        answer=world.answer,
        equation=world.equation,
        operands=world.operands,
        ops=world.ops,
        relations=tuple(r.kind for r in world.relations),
        world=world,
        style=style,
    )


def _operand(rng: random.Random, v: int, op: str, lo: int, hi: int) -> int | None:
    """An operand for `v op y` keeping every quantity a whole number in [1, hi * 10]."""
    if op == "-":
        return rng.randint(lo, v - 1) if v - 1 >= lo else None
    if op == "+":
        return rng.randint(lo, hi)
    if op == "*":
        ks = [k for k in range(2, 6) if v * k <= hi * 10]
        return rng.choice(ks) if ks else None
    divisors = [k for k in range(2, min(v, 12) + 1) if v % k == 0 and k != v]
    return rng.choice(divisors) if divisors else None


def sample_world(
    rng: random.Random,
    n_steps: int = 1,
    kinds: Sequence[str] | None = None,
    ops: Sequence[str | None] | None = None,
    *,
    lo: int = 2,
    hi: int = 50,
) -> World:
    """A random world of `n_steps` relations (kinds and ops drawn unless given)."""
    for _ in range(1000):
        w = _try_world(rng, n_steps, kinds, ops, lo, hi)
        if w is not None:
            return w
    raise ValueError(f"no world found for kinds={kinds}, ops={ops}, range [{lo}, {hi}]")


def _try_world(rng, n_steps, kinds, ops, lo, hi) -> World | None:
    if kinds is None:
        kinds = [rng.choice(RELATIONS) for _ in range(n_steps)]
        if any(a == b == "rate" for a, b in zip(kinds, kinds[1:])):
            return None  # packing the content straight back into its containers
    kinds = list(kinds)
    ops = list(ops) if ops is not None else [None] * len(kinds)
    agents = rng.sample(AGENTS, len(kinds) + 1)
    in_containers = kinds[0] == "rate" and (ops[0] in (None, "*")) and rng.random() < 0.5
    if kinds[0] == "rate" and ops[0] == "*":
        in_containers = True
    start = rng.randint(lo, hi if not in_containers else min(hi, 12))
    containers, v, rels = in_containers, start, []
    for k, kind in enumerate(kinds):
        if kind == "rate":
            op = "*" if containers else "/"
            if ops[k] not in (None, op):
                return None
            containers = not containers
        else:
            op = ops[k] or rng.choice(_OPS[kind])
            if op not in _OPS[kind]:
                raise ValueError(f"{kind} takes ops {_OPS[kind]}, not {op!r}")
        y = _operand(rng, v, op, lo, hi)
        if y is None:
            return None
        other = None if kind == "rate" else agents[k + 1]
        rels.append(Relation(kind, op, y, other))
        v = apply_op(v, op, y)
    return World(agents[0], rng.randrange(len(CONTAINERS)), start, tuple(rels), in_containers)


def random_style(rng: random.Random, world: World, consistent: bool = True) -> Style:
    return Style(
        start=rng.randrange(len(T.START)),
        relations=tuple(rng.randrange(4) for _ in world.relations),
        question=rng.randrange(len(T.QUESTION)),
        consistent=consistent,
    )


def generate(
    seed: int,
    n_steps: int = 1,
    kinds: Sequence[str] | None = None,
    ops: Sequence[str | None] | None = None,
    *,
    lo: int = 2,
    hi: int = 50,
    consistent: bool = True,
) -> WordProblem:
    """One problem from `seed`: the same seed and arguments give the same problem."""
    rng = random.Random(seed)
    world = sample_world(rng, n_steps, kinds, ops, lo=lo, hi=hi)
    return render(world, random_style(rng, world, consistent))


def generate_many(n: int, seed: int = 0, n_steps: int = 1, **kw) -> list[WordProblem]:
    """`n` problems; problem i comes from seed `seed * 1_000_003 + i`."""
    return [generate(seed * 1_000_003 + i, n_steps, **kw) for i in range(n)]
