"""Coreference scores: MUC, B-cubed, CEAF-m, CEAF-e, BLANC, LEA and the CoNLL average.

Entities are lists of mentions; a mention is any hashable value (a `(start, end)` token span
from `mechjax.evals.conll.read_conll`, a mention index). Each metric returns `Counts`
(recall and precision as numerator/denominator), so several documents are scored the way
the CoNLL shared tasks score a corpus: numerators and denominators summed over documents
first (micro average), recall, precision and F1 from the sums (`score_corpus`).

The definitions follow the official reference scorer (conll/reference-coreference-scorers,
v8.01, `lib/CorScorer.pm`), and are checked against its published test cases:

- Repeated response mentions are dropped (the first occurrence in entity order is kept,
  later ones removed, entities left empty removed), as the scorer does. A repeated key
  mention is an error here (the reference scorer prints a warning and scores a key in which
  the mention belongs to two entities).
- MUC (Vilain et al. 1995): links. Recall = sum over key entities K of |K| - p(K) over the
  sum of |K| - 1, p(K) the number of response entities K is split into (key mentions the
  response misses count as singletons); precision the same with the roles swapped.
- B-cubed (Bagga & Baldwin 1998): per mention, |K ∩ R| / |K| (recall, over key mentions)
  and |K ∩ R| / |R| (precision, over response mentions); a mention absent from the other
  side scores 0 there.
- CEAF (Luo 2005): the one-to-one alignment of key and response entities that maximises
  the total similarity (Hungarian algorithm); CEAF-m with phi3 = |K ∩ R| (over the numbers
  of key / response mentions), CEAF-e with phi4 = 2 |K ∩ R| / (|K| + |R|) (over the
  numbers of key / response entities).
- BLANC (Recasens & Hovy 2011, extended to system mentions by Luo et al. 2014): coreference
  links (pairs in one entity) and non-coreference links (pairs across two entities) of key
  and response; recall, precision and F of each kind, averaged; when the key has no
  coreference link (or no non-coreference link) only the other kind counts.
- LEA (Moosavi & Strube 2016), not in the reference scorer; its expected values come from
  the test suite of the LEA authors' scorer (ns-moosavi/coval): each key entity K weighs
  |K| and scores the fraction of its |K|(|K|-1)/2 links that some response entity also
  holds; a singleton key entity has one (self) link, resolved when the response holds the
  mention as a singleton too. Precision swaps key and response.
- CoNLL F1 (Pradhan et al. 2012) is the mean of the MUC, B-cubed and CEAF-e F1.

Pure Python; the assignment of CEAF uses `scipy.optimize.linear_sum_assignment`.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Callable, NamedTuple

import numpy as np

from mechjax.errors import InputError

__all__ = [
    "METRICS",
    "BlancCounts",
    "Counts",
    "Score",
    "b_cubed",
    "blanc",
    "ceaf_e",
    "ceaf_m",
    "conll_f1",
    "lea",
    "mentions",
    "muc",
    "prepare",
    "score_corpus",
    "score_document",
]

Entities = Sequence[Sequence[Hashable]]


def _f1(r: float, p: float) -> float:
    return 2 * r * p / (r + p) if r + p > 0 else 0.0


class Score(NamedTuple):
    """Recall, precision and F1 of one metric."""

    recall: float
    precision: float
    f1: float


class Counts(NamedTuple):
    """Numerators and denominators of recall and precision (sum them over documents)."""

    recall_num: float
    recall_den: float
    precision_num: float
    precision_den: float

    def __add__(self, other) -> Counts:  # type: ignore[override]
        return Counts(*(a + b for a, b in zip(self, other)))

    def score(self) -> Score:
        r = self.recall_num / self.recall_den if self.recall_den else 0.0
        p = self.precision_num / self.precision_den if self.precision_den else 0.0
        return Score(r, p, _f1(r, p))


class BlancCounts(NamedTuple):
    """BLANC's counts: coreference links and non-coreference links, key / response / both."""

    coref: Counts
    noncoref: Counts

    def __add__(self, other) -> BlancCounts:  # type: ignore[override]
        return BlancCounts(self.coref + other.coref, self.noncoref + other.noncoref)

    def score(self) -> Score:
        c, n = self.coref.score(), self.noncoref.score()
        if self.coref.recall_den == 0 and self.noncoref.recall_den == 0:
            return Score(0.0, 0.0, 0.0)
        if self.coref.recall_den == 0:
            return n
        if self.noncoref.recall_den == 0:
            return c
        return Score((c.recall + n.recall) / 2, (c.precision + n.precision) / 2, (c.f1 + n.f1) / 2)


# ----------------------------------------------------------------------- preparation


def prepare(key: Entities, response: Entities) -> tuple[list[list], list[list]]:
    """Key and response as lists of lists, as every metric here scores them.

    Empty key entities are dropped; a mention twice in the key is an error. In the
    response, a mention seen before (in this entity or an earlier one) is removed and
    emptied entities are dropped, as the reference scorer does.
    """
    seen: dict = {}
    k_out = []
    for i, ent in enumerate(key):
        for m in ent:
            if m in seen:
                raise InputError(
                    f"key mention {m!r} appears twice (entities {seen[m]} and {i}); a mention "
                    "belongs to one key entity"
                )
            seen[m] = i
        if len(ent):
            k_out.append(list(ent))
    r_seen: set = set()
    r_out = []
    for ent in response:
        kept = []
        for m in ent:
            if m not in r_seen:
                r_seen.add(m)
                kept.append(m)
        if kept:
            r_out.append(kept)
    return k_out, r_out


def _index(entities: list[list]) -> dict:
    return {m: i for i, ent in enumerate(entities) for m in ent}


def _overlaps(a: list[list], b: list[list]) -> list[dict[int, int]]:
    """For each entity of `a`: {index of an entity of b: size of the intersection}."""
    where = _index(b)
    out = []
    for ent in a:
        counts: dict[int, int] = {}
        for m in ent:
            j = where.get(m)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        out.append(counts)
    return out


# ----------------------------------------------------------------------------- metrics


def muc(key: Entities, response: Entities) -> Counts:
    """MUC: common links over key links (recall) and over response links (precision)."""
    k, r = prepare(key, response)
    correct = sum(n - 1 for counts in _overlaps(r, k) for n in counts.values())
    return Counts(correct, sum(len(e) - 1 for e in k), correct, sum(len(e) - 1 for e in r))


def b_cubed(key: Entities, response: Entities) -> Counts:
    """B-cubed: per-mention overlap, averaged over key (recall) and response (precision)."""
    k, r = prepare(key, response)
    rec = sum(n * n / len(ent) for ent, counts in zip(k, _overlaps(k, r)) for n in counts.values())
    prec = sum(n * n / len(ent) for ent, counts in zip(r, _overlaps(r, k)) for n in counts.values())
    return Counts(rec, sum(map(len, k)), prec, sum(map(len, r)))


def _ceaf(key: Entities, response: Entities, entity_based: bool) -> Counts:
    from scipy.optimize import linear_sum_assignment

    k, r = prepare(key, response)
    sim = np.zeros((len(k), len(r)))
    for i, counts in enumerate(_overlaps(k, r)):
        for j, n in counts.items():
            sim[i, j] = 2 * n / (len(k[i]) + len(r[j])) if entity_based else n
    total = 0.0
    if sim.size:
        rows, cols = linear_sum_assignment(sim, maximize=True)
        total = float(sim[rows, cols].sum())
    if entity_based:
        return Counts(total, len(k), total, len(r))
    return Counts(total, sum(map(len, k)), total, sum(map(len, r)))


def ceaf_m(key: Entities, response: Entities) -> Counts:
    """CEAF-m: the best one-to-one entity alignment by common mentions (phi3)."""
    return _ceaf(key, response, entity_based=False)


def ceaf_e(key: Entities, response: Entities) -> Counts:
    """CEAF-e: the best one-to-one entity alignment by phi4 = 2|K∩R| / (|K| + |R|)."""
    return _ceaf(key, response, entity_based=True)


def _links(entities: list[list], order: dict) -> tuple[set, set]:
    """(coreference links, non-coreference links) as sets of ordered mention pairs."""

    def pair(a, b):
        return (a, b) if order[a] <= order[b] else (b, a)

    coref = {pair(a, b) for ent in entities for a, b in itertools.combinations(ent, 2)}
    non = {pair(a, b) for e1, e2 in itertools.combinations(entities, 2) for a in e1 for b in e2}
    return coref, non


def blanc(key: Entities, response: Entities) -> BlancCounts:
    """BLANC: coreference and non-coreference links of key and response (Luo et al. 2014)."""
    k, r = prepare(key, response)
    order = {m: i for i, m in enumerate(dict.fromkeys(itertools.chain(*k, *r)))}
    kc, kn = _links(k, order)
    rc, rn = _links(r, order)
    both_c, both_n = len(kc & rc), len(kn & rn)
    return BlancCounts(
        Counts(both_c, len(kc), both_c, len(rc)), Counts(both_n, len(kn), both_n, len(rn))
    )


def _lea_side(a: list[list], b: list[list]) -> tuple[float, float]:
    b_idx = _index(b)
    num = 0.0
    for ent, counts in zip(a, _overlaps(a, b)):
        if len(ent) == 1:
            j = b_idx.get(ent[0])
            resolved = 1.0 if j is not None and len(b[j]) == 1 else 0.0
        else:
            links = len(ent) * (len(ent) - 1) / 2
            resolved = sum(n * (n - 1) / 2 for n in counts.values()) / links
        num += len(ent) * resolved
    return num, float(sum(map(len, a)))


def lea(key: Entities, response: Entities) -> Counts:
    """LEA: each entity weighted by its size, scored by the fraction of its links resolved."""
    k, r = prepare(key, response)
    rn, rd = _lea_side(k, r)
    pn, pd = _lea_side(r, k)
    return Counts(rn, rd, pn, pd)


def mentions(key: Entities, response: Entities) -> Counts:
    """Mention identification: exact-match mentions over key and over response mentions."""
    k, r = prepare(key, response)
    common = len(set(_index(k)) & set(_index(r)))
    return Counts(common, sum(map(len, k)), common, sum(map(len, r)))


METRICS: dict[str, Callable] = {
    "muc": muc,
    "bcub": b_cubed,
    "ceafm": ceaf_m,
    "ceafe": ceaf_e,
    "blanc": blanc,
    "lea": lea,
    "mentions": mentions,
}


# ------------------------------------------------------------------------- corpora


def _check_metrics(metrics: Iterable[str]) -> list[str]:
    metrics = list(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise InputError(f"unknown coreference metrics {bad}; valid: {sorted(METRICS)}")
    return metrics


def score_document(
    key: Entities, response: Entities, metrics: Iterable[str] = tuple(METRICS)
) -> dict:
    """`{metric: Counts or BlancCounts}` of one document (names as the reference scorer's:
    muc, bcub, ceafm, ceafe, blanc; plus lea and mentions)."""
    return {m: METRICS[m](key, response) for m in _check_metrics(metrics)}


def score_corpus(
    key: Mapping[str, Entities],
    response: Mapping[str, Entities],
    metrics: Iterable[str] = tuple(METRICS),
) -> dict[str, Score]:
    """Micro-averaged scores of a corpus: counts summed over the key's documents.

    Args:
      key: `{document name: entities}` (e.g. from `read_conll`).
      response: the same for the system; a key document missing here scores as an empty
        response; response documents not in the key are ignored (as the reference scorer).
      metrics: which metrics (default all); the result also holds "conll" (the mean of
        the MUC, B-cubed and CEAF-e F1, as a Score whose recall and precision are the
        means of theirs) when those three are scored.
    """
    metrics = _check_metrics(metrics)
    totals: dict = {}
    for name, k in key.items():
        for m, c in score_document(k, response.get(name, []), metrics).items():
            totals[m] = c if m not in totals else totals[m] + c
    if not totals:  # an empty key: every metric scores zero
        totals = {
            m: BlancCounts(Counts(0, 0, 0, 0), Counts(0, 0, 0, 0))
            if m == "blanc"
            else Counts(0, 0, 0, 0)
            for m in metrics
        }
    out = {m: c.score() for m, c in totals.items()}
    if {"muc", "bcub", "ceafe"} <= set(out):
        out["conll"] = conll_f1(out)
    return out


def conll_f1(scores: Mapping[str, Score]) -> Score:
    """The CoNLL average: the mean of the MUC, B-cubed and CEAF-e scores."""
    missing = [m for m in ("muc", "bcub", "ceafe") if m not in scores]
    if missing:
        raise InputError(f"the CoNLL average needs muc, bcub and ceafe; missing {missing}")
    parts = [scores[m] for m in ("muc", "bcub", "ceafe")]
    return Score(*(float(np.mean([p[i] for p in parts])) for i in range(3)))
