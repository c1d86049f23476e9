"""Token sequences of the Socratic CoT study: a closed word vocabulary and the five formats.

The students read and write a closed vocabulary: the words and punctuation of the
generator's templates (`mechjax.evals.templates`, agent and container names), the ten
digits (a number is written digit by digit, most significant first, as a pretrained
model's tokenizer splits numbers into pieces), and four special tokens: `<pad>` (0; also
the pad id of `mj.generate` for a model without a tokenizer), `<sep>` (ends the problem,
a subquestion or a solution), `<ans>` (between a subquestion and its solution, for the
solver) and `<eos>`.

Each problem gives one training sequence per student (`encode_example`), the target tokens
marked for the loss:

- answer-only: `P <sep> The answer is a . <eos>`, loss on everything after `<sep>`;
- CoT: `P <sep> s_1 . s_2 . ... The answer is a . <eos>`;
- unified Socratic: `P <sep> Q : q_1 A : s_1 . ... The answer is a . <eos>`;
- decomposer (QG): `P <sep> q_1 <sep> q_2 <sep> ... q_n <sep> <eos>`, loss on the
  subquestions and the markers (`<eos>` where it should stop asking);
- solver (QA): `P <sep> q_1 <ans> s_1 <sep> q_2 <ans> s_2 <sep> ...`, loss on the solutions
  and their `<sep>` only (the subquestions are given at inference).

The decomposer sees only the earlier subquestions and the solver the earlier pairs, as in
the paper, so training on the whole sequence is teacher forcing of every step at once.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mechjax.evals import socratic, templates, worlds

__all__ = [
    "FORMATS",
    "Encoded",
    "Vocab",
    "build_vocab",
    "encode_example",
    "encode_set",
    "join_words",
    "problems",
]

FORMATS = ("answer", "cot", "unified", "qg", "qa")
PAD, SEP, ANS, EOS = "<pad>", "<sep>", "<ans>", "<eos>"
_WORD = re.compile(r"\d|[A-Za-z]+|[^\sA-Za-z\d]")


def split_words(text: str) -> list[str]:
    """Words, single digits and single punctuation marks of a text."""
    return _WORD.findall(text)


def join_words(words: Sequence[str]) -> str:
    """Words back to text, with the digits of a number run together ("2 1" -> "21")."""
    out = ""
    for w in words:
        glue = out and not (w.isdigit() and out[-1].isdigit())
        out += (" " if glue else "") + w
    return out


class Vocab:
    """A closed word-level vocabulary: ids of words, numbers and the special tokens."""

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.pad, self.sep, self.ans, self.eos = (self.ids[t] for t in (PAD, SEP, ANS, EOS))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        out = []
        for w in split_words(text):
            if w not in self.ids:
                raise ValueError(f"{w!r} is not in the students' vocabulary: {text!r}")
            out.append(self.ids[w])
        return out

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.words[int(i)] for i in ids]


def build_vocab() -> Vocab:
    """Every word the templates, agents, containers and the teacher's formats can write."""
    texts: list[str] = [socratic.ANSWER, "Q : A :"]
    texts += list(templates.START) + list(templates.PART_WHOLE) + list(templates.QUESTION)
    for group in (templates.TRANSFER, templates.COMPARISON, templates.RATE):
        texts += [t for ts in group.values() for t in ts]
    texts += list(socratic.SUBQUESTIONS.values())
    texts += list(worlds.AGENTS) + [w for c in worlds.CONTAINERS for w in c]
    texts += ["+ - * / = . now together and has have does do own owns"]
    words = {w for t in texts for w in split_words(re.sub(r"\{[^}]*\}", " ", t))}
    words = sorted(w for w in words if not w.isdigit())
    return Vocab([PAD, SEP, ANS, EOS] + [str(n) for n in range(10)] + words)


def problems(
    n: int,
    steps: Sequence[int],
    seed: int,
    *,
    lo: int,
    hi: int,
    ops: Sequence[tuple[str, str]] | None = None,
) -> list[worlds.WordProblem]:
    """`n` problems, chain lengths cycling over `steps`; problem i from seed (seed, i).

    `ops`: the (relation kind, operation) pairs a step is drawn from, uniformly (None:
    the generator's own draw over every kind)."""
    out = []
    for i in range(n):
        s = seed * 1_000_003 + i
        k = steps[i % len(steps)]
        if ops is None:
            out.append(worlds.generate(s, k, lo=lo, hi=hi))
            continue
        rng = random.Random(s)
        for attempt in range(100):  # some draws have no world (too many subtractions)
            pick = [rng.choice(list(ops)) for _ in range(k)]
            kinds, signs = [p[0] for p in pick], [p[1] for p in pick]
            try:
                out.append(worlds.generate(s * 101 + attempt, k, kinds, signs, lo=lo, hi=hi))
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"no world of {k} steps from {ops} in [{lo}, {hi}]")
    return out


def encode_example(vocab: Vocab, sup: socratic.Supervision, fmt: str) -> tuple[list, list]:
    """(token ids, loss mask) of one problem for the student `fmt` (see the module doc)."""
    enc = vocab.encode
    prompt = enc(sup.problem) + [vocab.sep]
    if fmt in ("answer", "cot", "unified"):
        text = {"answer": sup.answer_only, "cot": sup.cot, "unified": sup.socratic}[fmt]
        target = enc(text) + [vocab.eos]
        return prompt + target, [0] * len(prompt) + [1] * len(target)
    ids, mask = list(prompt), [0] * len(prompt)
    for step in sup.steps:
        q = enc(step.question)
        if fmt == "qg":
            ids += q + [vocab.sep]
            mask += [1] * (len(q) + 1)
        elif fmt == "qa":
            s = enc(step.solution) + [vocab.sep]
            ids += q + [vocab.ans] + s
            mask += [0] * (len(q) + 1) + [1] * len(s)
        else:
            raise ValueError(f"unknown format {fmt!r}; valid: {FORMATS}")
    if fmt == "qg":
        ids.append(vocab.eos)
        mask.append(1)
    return ids, mask


class Encoded(NamedTuple):
    """A training set of one format: right-padded ids, loss masks and lengths."""

    tokens: np.ndarray  # int32 [n, width]
    mask: np.ndarray  # float32 [n, width], 1 on target tokens
    lengths: np.ndarray  # int32 [n]


def encode_set(vocab: Vocab, sups: Sequence[socratic.Supervision], fmt: str) -> Encoded:
    rows = [encode_example(vocab, s, fmt) for s in sups]
    width = max(len(ids) for ids, _ in rows)
    tokens = np.full((len(rows), width), vocab.pad, np.int32)
    mask = np.zeros((len(rows), width), np.float32)
    for i, (ids, m) in enumerate(rows):
        tokens[i, : len(ids)] = ids
        mask[i, : len(m)] = m
    return Encoded(tokens, mask, np.asarray([len(ids) for ids, _ in rows], np.int32))
