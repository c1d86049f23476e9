"""The controls of Stolfo et al. (2023): number retrieval (type 11) and factual recall.

`number_retrieval` uses the paper's entity dictionary, shipped in
`mechjax/tasks/data/lm_arithmetic` under the MIT licence; `factual_recall` is a small
built-in stand-in for LAMA, which is not available offline.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from mechjax.tasks.arithmetic import _answer_text, _check_shots
from mechjax.tasks.batch import TaskBatch, TaskError, _build, _is_single, single_token

# entity_dict.json of alestolfo/lm-arithmetic (MIT, licence file beside it), shipped
# with the package so the control task needs no download
_PACKAGED_DATA = Path(__file__).parent / "data" / "lm_arithmetic"


def _entities(data_dir) -> dict:
    d = Path(data_dir or os.environ.get("MECHJAX_LM_ARITHMETIC") or _PACKAGED_DATA)
    path = d / "entity_dict.json"
    if not path.is_file():
        raise TaskError(
            f"number_retrieval: no entity_dict.json in {d} (the lm-arithmetic "
            "data folder, from data_dir= or $MECHJAX_LM_ARITHMETIC)"
        )
    entities = json.loads(path.read_text())
    bad = [
        k
        for k, v in entities.items()
        if not (isinstance(v, list) and v and all(len(e) == 2 for e in v))
    ]
    if len(entities) < 2 or bad:
        raise TaskError(
            f"number_retrieval: {path} must map at least two classes to lists of "
            f"[singular, plural] names; bad classes: {bad}"
        )
    return entities


ENTITY_TEMPLATES = (
    "Q: I have {x} {entity1} and {y} {entity2}. How many {cls} do I have? A:",
    "Q: Paul has {x} {entity1} and {y} {entity2}. How many {cls} does Paul have? A:",
    "Q: I can see {x} {entity1} and {y} {entity2}. How many {cls} are there? A:",
    "Q: I have {x} {entity1} and {y} {entity2}. How many {cls} are there? A:",
    "Q: Alice received {x} {entity1} and {y} {entity2}. How many {cls} did she receive? A:",
    "Q: Mark bought {x} {entity1} and {y} {entity2}. How many {cls} did he buy? A:",
    "Q: Jasmin sold {x} {entity1} and {y} {entity2}. How many {cls} did she sell? A:",
    "Q: Sarah owns {x} {entity1} and {y} {entity2}. How many {cls} does she own? A:",
)


def _entity_instance(rng, template: str, entities: dict, max_n: int):
    """(body with {cls} left open, x, y, entity1, entity2) as the paper draws them."""
    x, y = rng.sample(range(max_n + 1), 2)
    c1, c2 = rng.sample(sorted(entities), 2)
    e1 = rng.choice(entities[c1])[0 if x == 1 else 1]
    e2 = rng.choice(entities[c2])[0 if y == 1 else 1]
    body = template.replace("{x}", str(x)).replace("{y}", str(y))
    return body.replace("{entity1}", e1).replace("{entity2}", e2), x, y, e1, e2


def number_retrieval(
    tokenizer, n: int = 32, seed: int = 0, *, data_dir=None, max_n: int = 9, n_shots: int = 0
) -> TaskBatch:
    """Type 11 of Stolfo et al. 2023: "I have x A and y B. How many A ..." vs "... B".

    answers = x, wrongs = y. The entity dictionary is the paper's `entity_dict.json`
    (shipped with mechjax); `data_dir` or `$MECHJAX_LM_ARITHMETIC` point to another folder
    holding one. `n_shots` solved examples of the same template go before each prompt
    ("{prompt} {x}\n" each, one prefix per template, as the paper's `n_shots`).
    Positions: op1 (x), op2 (y), end.
    """
    _check_shots(n_shots)
    entities = _entities(data_dir)
    rng = random.Random(seed)
    shots_rng = random.Random(f"{seed}-shots")
    prefix = {}
    for t in ENTITY_TEMPLATES:
        shots = [_entity_instance(shots_rng, t, entities, max_n) for _ in range(n_shots)]
        prefix[t] = "".join(f"{b.replace('{cls}', e1)} {x}\n" for b, x, _, e1, _ in shots)
    rows = []
    # each template has its own prefix length: draw more rows so that one length has `n`
    for i in range(n * (40 if n_shots else 10)):
        t = ENTITY_TEMPLATES[i % len(ENTITY_TEMPLATES)]
        body, x, y, e1, e2 = _entity_instance(rng, t, entities, max_n)
        clean, ans = _answer_text(tokenizer, body.replace("{cls}", e1), x)
        corrupted, wrong = _answer_text(tokenizer, body.replace("{cls}", e2), y)
        x_end = clean.index(f" {x} ") + len(str(x)) + 1
        y_end = clean.index(f" {y} ", x_end) + len(str(y)) + 1
        rows.append(
            {
                "clean": clean,
                "corrupted": corrupted,
                "answer": ans,
                "wrong": wrong,
                "spans": {"op1": x_end, "op2": y_end},
                "prefix": prefix[t],
            }
        )
    return _build(rows, tokenizer, "number_retrieval", n, {"n_shots": n_shots})


FACTS = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Russia", "Moscow"),
    ("England", "London"),
    ("Egypt", "Cairo"),
    ("China", "Beijing"),
    ("Greece", "Athens"),
    ("Austria", "Vienna"),
    ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Norway", "Oslo"),
    ("Cuba", "Havana"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Canada", "Ottawa"),
    ("Sweden", "Stockholm"),
)


def factual_recall(tokenizer, n: int = 16, seed: int = 0) -> TaskBatch:
    """ "The capital of {country} is" -> city; the corrupted prompt names another country.

    A stand-in for the LAMA control (type 20), which is not available offline.
    Positions: subject (last token of the country), end.
    """
    facts = [(c, city) for c, city in FACTS if _is_single(tokenizer, " " + city)]
    if len(facts) < 2:
        raise TaskError("factual_recall: fewer than two single-token capitals for this tokenizer")
    rng = random.Random(seed)
    rows = []
    for _ in range(n * 10):
        (c1, a1), (c2, a2) = rng.sample(facts, 2)
        clean = f"The capital of {c1} is"
        rows.append(
            {
                "clean": clean,
                "corrupted": f"The capital of {c2} is",
                "answer": single_token(tokenizer, " " + a1),
                "wrong": single_token(tokenizer, " " + a2),
                "spans": {"subject": len("The capital of ") + len(c1)},
            }
        )
    return _build(rows, tokenizer, "factual_recall", n)
