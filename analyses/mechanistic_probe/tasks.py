"""The two tasks of the MechanisticProbe reproduction, generated offline from a seed.

**k-th smallest** (Hou et al.'s synthetic task, `src/utils.py:data_generator`): a list of
`n_list` numbers drawn with replacement from `n_values` single-token numbers; the target
is the k-th smallest (0-based, `sorted(list)[k]`), predicted at the last list position.
Here the numbers are the token ids 0..n_values-1 themselves (a model trained from scratch
has no number words), so the order of the values is the order of the ids.

**ProofWriter-like rules and facts** (an offline stand-in for ProofWriter, whose data is
not available here): statements about people and attributes, "Anne is red." (a fact) and
"If someone is red then they are kind." (a rule), shuffled, then a question. A prompt of
proof depth d (1 to 3) holds one fact about the queried person, "P is a0.", and the chain
of rules a0 -> a1 -> ... -> a_d; the true question is "P is a_d.". Distractors fill the
prompt to `n_statements`: facts about other people (their attributes may be chain
attributes: a rule then applies to them, never to P) and rules between attributes outside
the chain (their premise never holds for P, so they prove nothing about P). The false
question asks about an attribute seen in the prompt but not derivable for P (closed-world:
False). The reasoning tree is the proof: the last rule (a_{d-1} -> a_d) is the root
(depth 0), the rule before it depth 1, ..., the fact depth d; distractors are noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.mechanistic_probe import IGNORE, NOISE

PEOPLE = ("Anne", "Bob", "Charlie", "Dave", "Erin", "Fiona", "Gary", "Harry")
ATTRIBUTES = (
    "big",
    "blue",
    "cold",
    "furry",
    "green",
    "kind",
    "nice",
    "quiet",
    "red",
    "rough",
    "round",
    "smart",
    "white",
    "young",
)


def kth_smallest_batch(
    key: jax.Array, n: int, n_list: int, n_values: int, k: int
) -> tuple[jax.Array, jax.Array]:
    """(tokens int32 [n, n_list] drawn with replacement from 0..n_values-1, the k-th
    smallest of each row [n]); a pure function of `key`."""
    tokens = jax.random.randint(key, (n, n_list), 0, n_values, jnp.int32)
    return tokens, jnp.sort(tokens, axis=1)[:, k]


class ProofTask(NamedTuple):
    """Prompts of the rules-and-facts task: token ids right-padded, one statement a span."""

    tokens: np.ndarray  # int32 [n, pos], true question
    tokens_false: np.ndarray  # int32 [n, pos], the same statements, false question
    mask: np.ndarray  # bool [n, pos] of `tokens` (True = real token)
    mask_false: np.ndarray
    query: np.ndarray  # int [n]: the last real token of `tokens`
    query_false: np.ndarray
    spans: np.ndarray  # int [n, n_statements, 2]: each statement's [start, stop)
    depth: np.ndarray  # int [n, n_statements]: distance to the root, NOISE for distractors
    proof_depth: np.ndarray  # int [n]: 1..3
    texts: list[str]  # the true-question prompts


def _prompt(rng: np.random.RandomState, d: int, n_statements: int):
    """Statements (text, depth label) and the true and false questions of one prompt."""
    people = list(rng.permutation(PEOPLE))
    attrs = list(rng.permutation(ATTRIBUTES))
    who, chain, pool = people[0], attrs[: d + 1], attrs[d + 1 :]
    stmts = [(f"{who} is {chain[0]}.", d)]
    stmts += [
        (f"If someone is {chain[i]} then they are {chain[i + 1]}.", d - 1 - i) for i in range(d)
    ]
    others, seen = people[1:], set(chain)
    while len(stmts) < n_statements:
        if rng.rand() < 0.5:
            a = attrs[rng.randint(len(attrs))]
            stmts.append((f"{others[rng.randint(len(others))]} is {a}.", NOISE))
        else:
            a, b = rng.choice(len(pool), 2, replace=False)
            stmts.append((f"If someone is {pool[a]} then they are {pool[b]}.", NOISE))
        seen.add(stmts[-1][0].split()[-1].rstrip("."))
    order = rng.permutation(len(stmts))
    stmts = [stmts[i] for i in order]
    false_pool = sorted(seen - set(chain)) or pool
    wrong = false_pool[rng.randint(len(false_pool))]
    question = " Question: {} is {}. True or False? Answer:"
    return stmts, question.format(who, chain[-1]), question.format(who, wrong)


def _pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    tokens = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = True
    return tokens, mask


def proof_task(
    encode: Callable[[str], list[int]],
    n: int,
    *,
    n_statements: int = 10,
    seed: int = 0,
    pad_id: int = 0,
) -> ProofTask:
    """`n` prompts, proof depths cycling 1, 2, 3; `encode(text) -> ids` tokenizes each
    statement (with a leading space after the first) and the question separately, so each
    statement is an exact token span (the first without the prompt's first token, which
    collects the attention sink, as the reference's spans)."""
    if n_statements < 4:
        raise ValueError(f"n_statements must be at least 4 (a depth-3 proof), got {n_statements}")
    rng = np.random.RandomState(seed)
    rows, rows_false, spans, depth, texts = [], [], [], [], []
    proof_depth = np.array([1 + i % 3 for i in range(n)])
    for i in range(n):
        stmts, q_true, q_false = _prompt(rng, int(proof_depth[i]), n_statements)
        ids: list[int] = []
        sp, dp = [], []
        for j, (text, label) in enumerate(stmts):
            piece = encode(text if j == 0 else " " + text)
            # the reference (src/rtask/proofwriter_probe.py) starts the first statement's
            # span one token late: the prompt's first token collects the attention sink
            sp.append((len(ids) + (j == 0), len(ids) + len(piece)))
            dp.append(label)
            ids += piece
        rows.append(ids + encode(q_true))
        rows_false.append(ids + encode(q_false))
        spans.append(sp)
        depth.append(dp)
        texts.append(" ".join(t for t, _ in stmts) + q_true)
    tokens, mask = _pad(rows, pad_id)
    tokens_f, mask_f = _pad(rows_false, pad_id)
    d = np.asarray(depth, np.int64)
    assert d.min() >= IGNORE
    return ProofTask(
        tokens,
        tokens_f,
        mask,
        mask_f,
        mask.sum(1) - 1,
        mask_f.sum(1) - 1,
        np.asarray(spans, np.int64),
        d,
        proof_depth,
        texts,
    )


def word_encoder(vocab_size: int) -> Callable[[str], list[int]]:
    """A whitespace-and-punctuation tokenizer hashing words into `vocab_size` ids: the
    smoke run's stand-in for a real tokenizer (no download, deterministic)."""

    def encode(text: str) -> list[int]:
        words = text.replace(".", " .").replace("?", " ?").replace(":", " :").split()
        return [sum(map(ord, w)) * 31 % vocab_size for w in words]

    return encode
