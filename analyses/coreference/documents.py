"""Synthetic documents with entity chains of controlled length, for the coreference study.

A document tells of `n_entities` people. Each person is introduced by name in a sentence
of their own ("Alice worked as a baker."), then mentioned again until their chain holds
exactly `chain_length` mentions: by name, by a pronoun (he / she, him / her) or by their
role ("the baker"). Mentions are scheduled in a random interleaving of the chains; a
sentence holds one or two of them ("Alice called John."), and `n_filler` sentences that
mention nobody ("The streets were quiet in the evening.") are spread between them, which
sets the document's length independently of the chains.

Pronouns are used only where a reader can resolve them: the entity is the most recently
mentioned one of its gender (the subject of the same sentence counts), so the rule
"string match for names and roles, most recent entity of the pronoun's gender for
pronouns" (`rule_clusters`) recovers every chain exactly. The gold annotation is
therefore unambiguous, and what a model gets wrong it gets wrong for its own reasons.

`Doc.words` are the words and punctuation of the text (the CoNLL token column), and
each `Mention` has its word span and its character span (to find the model's tokens).
"""

from __future__ import annotations

import random
from typing import NamedTuple

__all__ = ["Doc", "Entity", "Mention", "make_document", "rule_clusters"]

FEMALE = ("Alice", "Emma", "Sarah", "Anna", "Maria", "Laura", "Julia", "Grace", "Clara",
          "Helen", "Rosa", "Nina", "Lucy", "Mary", "Kate", "Jane")  # fmt: skip
MALE = ("John", "David", "Peter", "James", "Paul", "Mark", "Tom", "Ben", "Sam", "Jack",
        "Adam", "Henry", "Frank", "Carl", "Leo", "Oscar")  # fmt: skip
ROLES = ("baker", "teacher", "doctor", "farmer", "pilot", "lawyer", "painter", "nurse",
         "driver", "writer", "singer", "chef")  # fmt: skip
PRONOUN = {("f", "subj"): "she", ("m", "subj"): "he", ("f", "obj"): "her", ("m", "obj"): "him"}

INTRO = "{X} worked as a {role}."
ONE = (
    "{X} walked to the market.",
    "{X} smiled.",
    "{X} read a long letter.",
    "{X} opened the window.",
    "{X} was tired after the trip.",
    "Later, {X} went home.",
    "{X} wrote a short note.",
)
TWO = (
    "{X} called {Y}.",
    "{X} met {Y} at the station.",
    "{X} gave {Y} a book.",
    "{X} waved at {Y}.",
    "{X} helped {Y} with the boxes.",
    "{X} thanked {Y}.",
)
FILLER = (
    "The weather was mild that day.",
    "The streets were quiet in the evening.",
    "A cold wind blew from the north.",
    "The town had one small library.",
    "Nobody expected the rain.",
    "The river ran past the old mill.",
    "Bells rang in the distance.",
    "The shops closed early on Sunday.",
)


class Entity(NamedTuple):
    name: str
    gender: str  # "f" or "m"
    role: str


class Mention(NamedTuple):
    entity: int
    kind: str  # "name", "pronoun" or "role"
    words: tuple[int, int]  # word span, both ends inclusive
    chars: tuple[int, int]  # character span [start, end) in the text


class Doc(NamedTuple):
    text: str
    words: list[str]
    sentences: list[list[str]]  # the words, one list per sentence
    entities: list[Entity]
    mentions: list[Mention]  # in text order
    n_filler: int

    @property
    def chains(self) -> list[list[tuple[int, int]]]:
        """Gold entities as word spans (the key of the CoNLL scorers)."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.entities]
        for m in self.mentions:
            out[m.entity].append(m.words)
        return out


def _split(sentence: str) -> list[str]:
    return sentence.replace(".", " .").replace(",", " ,").split()


class _Writer:
    """Builds the text sentence by sentence, recording each mention's word/char span."""

    def __init__(self):
        self.text, self.words, self.sentences, self.mentions = "", [], [], []

    def add(self, template: str, slots: dict[str, tuple[int, str, str]]) -> None:
        """`slots`: placeholder -> (entity, kind, surface form)."""
        parts, pos = [], 0
        fields = sorted((template.index("{" + k + "}"), k) for k in slots)
        for at, k in fields:
            parts.append((template[pos:at], None))
            parts.append((slots[k][2], k))
            pos = at + len(k) + 2
        parts.append((template[pos:], None))
        sent = "".join(p for p, _ in parts)
        sent = sent[0].upper() + sent[1:]
        start = len(self.text) + (1 if self.text else 0)
        offset, w0 = start, len(self.words)
        for piece, k in parts:
            if k is not None:
                e, kind, _ = slots[k]
                before = _split(sent[: offset - start])
                n = len(_split(piece))
                span = (w0 + len(before), w0 + len(before) + n - 1)
                self.mentions.append(Mention(e, kind, span, (offset, offset + len(piece))))
            offset += len(piece)
        words = _split(sent)
        self.text = f"{self.text} {sent}" if self.text else sent
        self.words += words
        self.sentences.append(words)


def make_document(
    rng: random.Random,
    n_entities: int,
    chain_length: int,
    n_filler: int = 0,
    *,
    p_pronoun: float = 0.4,
    p_role: float = 0.25,
    p_pair: float = 0.5,
) -> Doc:
    """A document whose `n_entities` chains each hold exactly `chain_length` mentions."""
    if n_entities > min(len(FEMALE), len(MALE)) or n_entities > len(ROLES):
        raise ValueError(f"at most {min(len(FEMALE), len(MALE), len(ROLES))} entities")
    if chain_length < 1:
        raise ValueError(f"chain_length must be >= 1, got {chain_length}")
    genders = [rng.choice("fm") for _ in range(n_entities)]
    names = {"f": rng.sample(FEMALE, n_entities), "m": rng.sample(MALE, n_entities)}
    roles = rng.sample(ROLES, n_entities)
    ents = [Entity(names[g][i], g, roles[i]) for i, g in enumerate(genders)]
    schedule = [e for e in range(n_entities) for _ in range(chain_length)]
    rng.shuffle(schedule)
    w = _Writer()
    introduced: set[int] = set()
    last: dict[str, int] = {}  # gender -> the entity mentioned last

    def form(e: int, role: str) -> tuple[int, str, str]:
        ent = ents[e]
        if last.get(ent.gender) == e and rng.random() < p_pronoun:
            out = (e, "pronoun", PRONOUN[(ent.gender, role)])
        elif rng.random() < p_role / (1 - p_pronoun):
            out = (e, "role", f"the {ent.role}")
        else:
            out = (e, "name", ent.name)
        last[ent.gender] = e
        return out

    sentences: list[tuple[str, dict]] = []
    i = 0
    while i < len(schedule):
        e = schedule[i]
        if e not in introduced:
            introduced.add(e)
            last[ents[e].gender] = e
            sentences.append(
                (INTRO.replace("{role}", ents[e].role), {"X": (e, "name", ents[e].name)})
            )
            i += 1
            continue
        nxt = schedule[i + 1] if i + 1 < len(schedule) else None
        if nxt is not None and nxt != e and nxt in introduced and rng.random() < p_pair:
            x = form(e, "subj")
            y = form(nxt, "obj")
            sentences.append((rng.choice(TWO), {"X": x, "Y": y}))
            i += 2
        else:
            sentences.append((rng.choice(ONE), {"X": form(e, "subj")}))
            i += 1
    # filler sentences at random gaps after the first sentence (order kept)
    gaps = sorted(rng.randint(1, len(sentences)) for _ in range(n_filler))
    for k, (template, slots) in enumerate(sentences):
        while gaps and gaps[0] == k:
            gaps.pop(0)
            w.add(rng.choice(FILLER), {})
        w.add(template, slots)
    for _ in gaps:
        w.add(rng.choice(FILLER), {})
    return Doc(w.text, w.words, w.sentences, ents, w.mentions, n_filler)


def rule_clusters(doc: Doc) -> list[list[tuple[int, int]]]:
    """The resolution rule the generator guarantees, read off the text alone: a name or a
    role by string match (a role belongs to whoever "worked as a" it), a pronoun to the
    most recently mentioned entity of its gender (names carry their gender). Returns
    entities as word spans."""
    cluster: dict[str, int] = {}  # name or role -> cluster
    gender: dict[int, str] = {}
    last: dict[str, int] = {}
    out: list[list[tuple[int, int]]] = []
    for m in doc.mentions:
        a, b = m.words
        surface = " ".join(doc.words[a : b + 1]).lower()
        if surface in ("she", "her", "he", "him"):
            g = "f" if surface in ("she", "her") else "m"
            c = last.get(g)
            if c is None:  # nobody of that gender yet: a new entity
                c = len(out)
                out.append([])
                gender[c] = g
        else:
            key = surface.removeprefix("the ")
            if key not in cluster:
                cluster[key] = len(out)
                out.append([])
                gender[cluster[key]] = "f" if doc.words[a] in FEMALE else "m"
                if doc.words[b + 1 : b + 4] == ["worked", "as", "a"]:
                    cluster[doc.words[b + 4]] = cluster[key]
            c = cluster[key]
        last[gender[c]] = c
        out[c].append(m.words)
    return out
