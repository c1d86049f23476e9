"""A world of invented organisations: documents, questions with gold answers, labelled
(claim, sources) pairs for calibrating a grounding judge, and string-match ground truth.

Every organisation has five facts (founding year, founder, city, staff, best-known
product) whose values are invented words and numbers, so no model has seen them: a
sentence can only state them correctly by reading the documents, and whether a sentence
is supported can be checked by string match. `values_in(sentence)` finds the checkable
values a sentence states (numbers, and every invented name of the world); a sentence is
supported when all of them occur together in one of the documents it was given.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "v", "z",
          "br", "dr", "gr", "kr", "tr", "th", "sk", "st", "vel", "mor"]  # fmt: skip
VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "ae"]
CODAS = ["", "", "n", "r", "l", "s", "th", "x", "m", "nd", "rk", "st"]
KINDS = ["Institute", "Works", "Foundation", "Company", "Observatory", "Society", "Guild"]
PRODUCTS = ["lens", "loom", "clock", "engine", "compass", "lantern", "valve", "press"]
ATTRIBUTES = ("founded", "founder", "city", "staff", "product")

DOC_TEMPLATES = {
    "founded": ["{org} was founded in {founded}.", "{org} was established in {founded}."],
    "founder": ["Its founder was {founder}.", "It was started by {founder}."],
    "city": ["{org} is based in the city of {city}.", "Its headquarters are in {city}."],
    "staff": ["Today it employs {staff} people.", "It has a staff of {staff}."],
    "product": [
        "It is best known for the {product}.",
        "Its most famous creation is the {product}.",
    ],
}
# other words for the same facts (the grounded claims of the calibration pairs)
PARAPHRASES = {
    "founded": "{org} came into being in the year {founded}.",
    "founder": "{founder} is the person who set up {org}.",
    "city": "{org} has its home in {city}.",
    "staff": "The workforce of {org} numbers {staff}.",
    "product": "{org} is famous for making the {product}.",
}
QUESTIONS = {
    "founded": "In which year was {org} founded?",
    "founder": "Who founded {org}?",
    "city": "In which city is {org} based?",
    "staff": "How many people does {org} employ?",
    "product": "What is {org} best known for?",
}
GENERIC = [
    "This is an interesting question.",
    "I hope this answer helps you.",
    "There are many organisations like this around the world.",
    "History is full of surprising stories.",
    "Many people find this topic fascinating.",
    "It is important to check the facts carefully.",
    "The answer depends on several factors.",
    "Science and industry often grow together.",
    "Some details may have changed over time.",
    "Let me know if you have other questions.",
]
_NUMBER = re.compile(r"\d[\d,]*")
_DOC_REF = re.compile(r"\bdocuments?\s+\d+(\s*(,|and|&)\s*\d+)*", re.IGNORECASE)


class Org(NamedTuple):
    """An invented organisation and its five facts (every value a string)."""

    org: str
    founded: str
    founder: str
    city: str
    staff: str
    product: str

    def fact(self, attribute: str) -> str:
        return getattr(self, attribute)


class Question(NamedTuple):
    org: Org
    attribute: str
    text: str
    gold: str


def _word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables))
    return (w + rng.choice(CODAS)).capitalize()


def make_world(n: int, seed: int = 0) -> list[Org]:
    """`n` organisations with distinct names and distinct fact values."""
    rng = random.Random(seed)
    seen: set[str] = set()

    def fresh(make) -> str:
        for _ in range(1000):
            v = make()
            if v not in seen:
                seen.add(v)
                return v
        raise RuntimeError("ran out of invented values")

    orgs = []
    for _ in range(n):
        orgs.append(
            Org(
                org=fresh(lambda: f"the {_word(rng, 2)} {rng.choice(KINDS)}"),
                founded=fresh(lambda: str(rng.randint(1701, 1989))),
                founder=fresh(lambda: f"{_word(rng, 2)} {_word(rng, 2)}"),
                city=fresh(lambda: _word(rng, rng.choice([2, 3]))),
                staff=fresh(lambda: str(rng.randint(120, 9800))),
                product=fresh(lambda: f"{_word(rng, 2).lower()} {rng.choice(PRODUCTS)}"),
            )
        )
    return orgs


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def document(o: Org, seed: int = 0) -> str:
    """The organisation's five facts, one sentence each, phrasing drawn by `seed`."""
    rng = random.Random(f"{o.org}/{seed}")
    return " ".join(_cap(rng.choice(DOC_TEMPLATES[a]).format(**o._asdict())) for a in ATTRIBUTES)


def questions(orgs: Sequence[Org], seed: int = 0) -> list[Question]:
    """One question per organisation, the five attributes used equally often (shuffled)."""
    rng = random.Random(seed)
    attrs = [ATTRIBUTES[i % len(ATTRIBUTES)] for i in range(len(orgs))]
    rng.shuffle(attrs)
    return [Question(o, a, QUESTIONS[a].format(org=o.org), o.fact(a)) for o, a in zip(orgs, attrs)]


def invented_values(orgs: Sequence[Org]) -> list[str]:
    """Every invented name of the world (numbers are found by pattern instead)."""
    out = []
    for o in orgs:
        out += [o.org.removeprefix("the "), o.founder, o.city, o.product]
    return out


def values_in(sentence: str, names: Sequence[str]) -> set[str]:
    """The checkable values a sentence states: its numbers (thousands separators dropped)
    and the invented names it contains (case-insensitive, whole words). References to the
    prompt's documents ("Document 1", "documents 1 and 2") are not values."""
    sentence = _DOC_REF.sub(" ", sentence)
    low = sentence.lower()
    found = {m.replace(",", "") for m in _NUMBER.findall(sentence)}
    for v in names:
        if re.search(rf"(?<!\w){re.escape(v.lower())}(?!\w)", low):
            found.add(v.lower())
    return found


def supported(sentence: str, documents: Sequence[str], names: Sequence[str]) -> bool | None:
    """String-match ground truth: True if every checkable value of the sentence occurs in
    one document, False if not, None if the sentence states no checkable value."""
    vals = values_in(sentence, names)
    if not vals:
        return None
    for d in documents:
        low = d.lower().replace(",", "")
        if all(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", low) for v in vals):
            return True
    return False


def calibration_pairs(
    orgs: Sequence[Org], others: Sequence[Org], seed: int = 0
) -> tuple[list[str], list[list[str]], np.ndarray, list[str]]:
    """Labelled (claim, sources) pairs: for each organisation, its document and a
    distractor's as the sources, and claims of four kinds: "paraphrase" (a fact in other
    words: grounded), "swap" (the same words with the value of another organisation: not
    grounded), "other" (a fact about an organisation not in the sources) and "generic"
    (a sentence with no facts). Returns claims, sources per claim, labels, kinds."""
    rng = random.Random(seed)
    claims, sources, labels, kinds = [], [], [], []
    for o in orgs:
        distractor, stranger, donor = rng.sample(list(others), 3)
        docs = [document(o), document(distractor)]
        a = rng.choice(ATTRIBUTES)
        swapped = o._replace(**{a: donor.fact(a)})
        b = rng.choice(ATTRIBUTES)
        for claim, label, kind in (
            (_cap(PARAPHRASES[a].format(**o._asdict())), True, "paraphrase"),
            (_cap(PARAPHRASES[a].format(**swapped._asdict())), False, "swap"),
            (_cap(PARAPHRASES[b].format(**stranger._asdict())), False, "other"),
            (rng.choice(GENERIC), False, "generic"),
        ):
            claims.append(claim)
            sources.append(docs)
            labels.append(label)
            kinds.append(kind)
    return claims, sources, np.asarray(labels), kinds
