"""In-context Blocksworld traces under a naming, tokenised with the positions the study
reads: every action word, every predicate word, and the query before each action.

A trace is a random walk of `steps` actions over four blocks, written as

    Blocks: a, b, c, d.
    State: <s_0>.
    State: <s_1>.
    Action: <verb_0> <blocks>.
    State: <s_2>.
    Action: <verb_1> <blocks>.
    ...

so the action that turned s_t into s_(t+1) comes after both states. At the query (the
":" of "Action:") the model has the two states and must name the action: its first token
is scored against the four verbs' first tokens. Half of the choice follows from the hand
alone (an empty hand is filled by pick-up or unstack, a full one emptied by put-down or
stack); the other half needs what the verbs do to the blocks (from or onto the table, or
another block). Every naming renders the same walks, so traces differ only in the names.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np

from mechjax.tasks import blocksworld as B

BLOCKS = ("a", "b", "c", "d")


class Trace(NamedTuple):
    """One tokenised trace; the position arrays index `tokens`.

    Attributes:
      naming: the naming's name.
      tokens: int ids (the model's BOS convention included).
      query: [steps] the position predicting action t's first token.
      answer: [steps] index of action t's verb in `blocksworld.ACTIONS`.
      verb: [steps] the last token of action t's verb word.
      pred_pos, pred_concept, pred_step: every predicate word's last token, its index in
        `blocksworld.PREDICATES` and the index of the state it belongs to.
      ends: [steps] the position after action t's line (a prefix through step t).
    """

    naming: str
    tokens: np.ndarray
    query: np.ndarray
    answer: np.ndarray
    verb: np.ndarray
    pred_pos: np.ndarray
    pred_concept: np.ndarray
    pred_step: np.ndarray
    ends: np.ndarray


def walks(n: int, steps: int, seed: int = 0) -> list[list[tuple]]:
    """`n` random walks of `steps` actions from random states of four blocks."""
    rng = random.Random(seed)
    return [B.random_walk(B.random_state(BLOCKS, rng), steps, rng) for _ in range(n)]


def render(walk: list[tuple], naming: B.Naming) -> tuple[str, list[tuple[int, int, str, int, int]]]:
    """The trace text and its marked spans: (start, end, kind, concept index, step) for
    each verb word, predicate word and query colon."""
    parts: list[str] = []
    spans: list[tuple[int, int, str, int, int]] = []

    def put(text: str, kind: str | None = None, concept: int = -1, step: int = -1) -> None:
        start = sum(len(p) for p in parts)
        parts.append(text)
        if kind is not None:
            spans.append((start, start + len(text), kind, concept, step))

    def state(s, k: int) -> None:
        put("State:")
        order = {"holding": 0, "handempty": 0, "on": 1, "ontable": 2, "clear": 3}
        facts = sorted(s, key=lambda f: (order[f[0]], f[1:]))
        for i, f in enumerate(facts):
            put(" " if i == 0 else "; ")
            put(naming.word(f[0]), "pred", B.PREDICATES.index(f[0]), k)
            if len(f) > 1:
                put(" " + " ".join(f[1:]))
        put(".\n")

    put(f"Blocks: {', '.join(BLOCKS)}.\n")
    states = [s for s, _ in walk] + [B.apply(*walk[-1])]
    state(states[0], 0)
    for t, (_, a) in enumerate(walk):
        state(states[t + 1], t + 1)
        put("Action")
        put(":", "query", B.ACTIONS.index(a.name), t)
        put(" ")
        put(naming.word(a.name), "verb", B.ACTIONS.index(a.name), t)
        put(" " + " ".join(a.args) + ".\n", "end", -1, t)
    return "".join(parts), spans


def tokenize(walk: list[tuple], naming: B.Naming, tokenizer) -> Trace:
    """The trace's token ids and the token positions of its marked spans (the last token
    that overlaps each span; the query colon must be a token of its own end)."""
    text, spans = render(walk, naming)
    ids = tokenizer.encode(text)
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    shift = len(ids) - len(enc.ids)
    if ids[shift:] != enc.ids:
        raise ValueError("the tokenizer's ids differ from its backend's: cannot map offsets")
    ends = np.array([e for _, e in enc.offsets])
    starts = np.array([s for s, _ in enc.offsets])

    def last_token(start: int, end: int) -> int:
        hit = np.flatnonzero((starts < end) & (ends > start))
        if not hit.size:
            raise ValueError(f"no token covers characters {start}:{end} of the trace")
        return int(hit[-1]) + shift

    cols: dict[str, list] = {"query": [], "answer": [], "verb": [], "ends": []}
    preds: list[tuple[int, int, int]] = []
    for start, end, kind, concept, step in spans:
        pos = last_token(start, end)
        if kind == "query":
            if ends[pos - shift] != end:
                raise ValueError(f"'Action:' shares its last token with what follows: {text!r}")
            cols["query"].append(pos)
            cols["answer"].append(concept)
        elif kind == "verb":
            cols["verb"].append(pos)
        elif kind == "end":
            cols["ends"].append(pos + 1)
        else:
            preds.append((pos, concept, step))
    p = np.array(preds, np.int64).reshape(-1, 3)
    return Trace(
        naming.name,
        np.asarray(ids, np.int32),
        *(np.asarray(cols[k], np.int64) for k in ("query", "answer", "verb")),
        p[:, 0],
        p[:, 1],
        p[:, 2],
        np.asarray(cols["ends"], np.int64),
    )


def verb_candidates(naming: B.Naming, tokenizer) -> np.ndarray:
    """The first token of " <verb>" for the four actions (ValueError if two coincide: the
    query could not tell them apart)."""
    firsts = [tokenizer.backend.encode(" " + naming.word(a), add_special_tokens=False).ids[0]
              for a in B.ACTIONS]  # fmt: skip
    if len(set(firsts)) < len(firsts):
        raise ValueError(f"naming {naming.name!r}: two verbs share a first token ({firsts})")
    return np.asarray(firsts, np.int32)


def namings(n_random: int, tokenizers, seed: int = 0) -> list[B.Naming]:
    """STANDARD, MYSTERY and `n_random` random namings whose verbs have distinct first
    tokens under every tokenizer given (seeds tried in order from `seed`)."""
    out = [B.STANDARD, B.MYSTERY]
    s = seed
    while len(out) < 2 + n_random:
        cand = B.random_naming(s)
        s += 1
        try:
            for tok in tokenizers:
                verb_candidates(cand, tok)
        except ValueError:
            continue
        out.append(cand)
    for n in out[:2]:
        for tok in tokenizers:
            verb_candidates(n, tok)
    return out
