"""Indirect-object identification (Wang et al. 2022, "Interpretability in the Wild").

BABA/ABBA templates; names, places and objects kept only if they are single tokens of
the tokenizer. Counterfactuals: `s2_io_flip` (MIB, Mueller et al. 2025: the second
mention of S becomes IO, so the answer flips to S) and `abc` (Wang et al.'s ABC
distribution: three unrelated names).

Layouts: templates put the names at different token indices, and ABBA swaps IO and S1,
so by default (`aligned=True`) a batch keeps only rows whose named positions (IO, S1,
S2, end) sit at the same indices in every row: then an absolute position (a column of a
`[layer, pos]` patching grid) is the same token role in every row. Such a batch is one
template layout of one order (BABA by default). `aligned=False` mixes templates and
orders (`order="mixed"` is its default); the batch then reports `aligned == False`, and a
sweep should use the named positions, one index per row
(`patch_sweep(..., positions=batch.positions)`), instead of absolute columns.
"""

from __future__ import annotations

import random
from typing import Sequence

from mechjax.tasks.batch import TaskBatch, TaskError, _build, _is_single, single_token

BABA_TEMPLATES = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
# ABBA: the first two names swapped.
ABBA_TEMPLATES = tuple(
    t.replace("[B]", "[X]", 1).replace("[A]", "[B]", 1).replace("[X]", "[A]", 1)
    for t in BABA_TEMPLATES
)

NAMES = (
    "Michael Christopher Jessica Matthew Ashley Jennifer Joshua Amanda Daniel David James "
    "Robert John Joseph Andrew Ryan Brandon Jason Justin Sarah William Jonathan Stephanie "
    "Brian Nicole Nicholas Anthony Heather Eric Elizabeth Adam Megan Melissa Kevin Steven "
    "Thomas Timothy Christina Kyle Rachel Laura Lauren Amber Brittany Danielle Richard "
    "Kimberly Jeffrey Amy Crystal Michelle Tiffany Jeremy Benjamin Mark Emily Aaron Charles "
    "Rebecca Jacob Stephen Patrick Sean Erin Jamie Kelly Samantha Nathan Sara Dustin Paul "
    "Angela Tyler Scott Katherine Andrea Gregory Erica Mary Travis Lisa Kenneth Bryan "
    "Lindsey Kristen Jose Alexander Jesse Katie Lindsay Shannon Vanessa Courtney Christine "
    "Alicia Cody Allison Bradley Samuel"
).split()
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")


def _fill(template: str, a: str, b: str, place: str, obj: str) -> tuple[str, dict]:
    """The prompt and the char offsets of the names (S1 = first B, S2 = second B)."""
    text = template.replace("[PLACE]", place).replace("[OBJECT]", obj)
    spans = {}
    first_b = text.index("[B]")
    first_a = text.index("[A]")
    second_b = text.index("[B]", first_b + 1)
    out, i = [], 0
    marks = sorted([(first_a, "IO", a), (first_b, "S1", b), (second_b, "S2", b)])
    for idx, name, val in marks:
        out.append(text[i:idx])
        spans[name] = sum(map(len, out)) + len(val)  # end of the name
        out.append(val)
        i = idx + 3
    out.append(text[i:])
    return "".join(out), spans


def ioi(
    tokenizer,
    n: int = 32,
    seed: int = 0,
    *,
    counterfactual: str = "s2_io_flip",
    order: str | None = None,
    templates: Sequence[str] | None = None,
    aligned: bool = True,
) -> TaskBatch:
    """IOI pairs. answers = IO, wrongs = S (their logit difference is the IOI metric).

    Args:
      counterfactual: "s2_io_flip" (S2 replaced by IO: the answer flips to S) or "abc"
        (all three names replaced by unrelated names).
      order: "baba", "abba" or "mixed" (half each, interleaved); default "baba" when
        `aligned`, else "mixed".
      templates: override the templates (with [A], [B], [PLACE], [OBJECT]).
      aligned: keep only rows whose named positions have the same token indices in every
        row (the most frequent layout); False mixes layouts (see the module docstring).
    Positions: IO, S1, S2 (last token of each name) and end.
    """
    if counterfactual not in ("s2_io_flip", "abc"):
        raise TaskError(f"counterfactual {counterfactual!r}; valid: 's2_io_flip', 'abc'")
    if order is None:
        order = "baba" if aligned else "mixed"
    if aligned and order == "mixed" and templates is None:
        raise TaskError(
            "order='mixed' puts IO before S1 in half the rows and after it in the others, so "
            "its rows cannot share one layout: pass aligned=False (and sweep over the named "
            "positions, patch_sweep(..., positions=batch.positions)) or order='baba'/'abba'"
        )
    names = [x for x in NAMES if _is_single(tokenizer, " " + x)]
    places = [x for x in PLACES if _is_single(tokenizer, " " + x)]
    objects = [x for x in OBJECTS if _is_single(tokenizer, " " + x)]
    if len(names) < 5 or not places or not objects:
        raise TaskError(
            f"ioi: the tokenizer has too few single-token names/places/objects "
            f"({len(names)} names, {len(places)} places, {len(objects)} objects)"
        )
    if templates is None:
        pools = {
            "baba": [BABA_TEMPLATES],
            "abba": [ABBA_TEMPLATES],
            "mixed": [BABA_TEMPLATES, ABBA_TEMPLATES],
        }
        if order not in pools:
            raise TaskError(f"order {order!r}; valid: 'baba', 'abba', 'mixed'")
        pool = pools[order]
    else:
        pool = [tuple(templates)]
    rng = random.Random(seed)
    rows = []
    # an aligned batch keeps one template's layout: draw enough rows for it
    for i in range(n * (40 if aligned else 20)):
        t = rng.choice(pool[i % len(pool)])
        a, b, c, d, e = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        clean, spans = _fill(t, a, b, place, obj)
        if counterfactual == "s2_io_flip":
            corrupted = clean[: spans["S2"] - len(b)] + a + clean[spans["S2"] :]
        else:
            abc, abc_spans = _fill(t, c, d, place, obj)
            s2 = abc_spans["S2"]
            corrupted = abc[: s2 - len(d)] + e + abc[s2:]
        rows.append(
            {
                "clean": clean,
                "corrupted": corrupted,
                "spans": spans,
                "answer": single_token(tokenizer, " " + a),
                "wrong": single_token(tokenizer, " " + b),
            }
        )
    info = {"counterfactual": counterfactual, "order": order}
    return _build(rows, tokenizer, f"ioi/{counterfactual}", n, info, aligned=aligned)
