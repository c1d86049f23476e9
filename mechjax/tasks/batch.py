"""Task generators: clean/corrupted token batches with answer tokens, from a seed.

Each generator takes a tokenizer (mechjax's `Tokenizer`, or anything with
`encode(text, add_bos=...)` and `decode(ids)`) and returns a `TaskBatch` whose clean and
corrupted prompts all have the same token length, so positions line up across the batch
and between the two runs (patching grids are indexed by absolute position).

- `ioi`: indirect-object identification with the BABA/ABBA templates of Wang et al.
  (2022, "Interpretability in the Wild"); names, places and objects kept only if they are
  single tokens of the tokenizer. Counterfactuals: `s2_io_flip` (MIB, Mueller et al.
  2025: the second mention of S becomes IO, so the answer flips to S) and `abc` (Wang et
  al.'s ABC distribution: three unrelated names).
- `arithmetic`: the two-operand templates of Stolfo et al. (EMNLP 2023,
  `alestolfo/lm-arithmetic:interventions/intervention.py`) with their operand-pair
  generator: result changes (type 1), same result (type 2) or changed operator (type 3).
  `max_n=9` is the paper's LLaMA setting (results 1..8, operands up to 300 with the same
  digit count in base and alt).
- `number_retrieval` (type 11 of the same paper, with its entity dictionary, shipped in
  `mechjax/data/lm_arithmetic` under the MIT licence) and `factual_recall` (a small built-in stand-in for LAMA,
  which is not available offline) are the paper's controls.
- `greater_than` (Hanna et al. 2023) and `induction` (repeated random tokens).

An answer that is not a single token raises `TaskError`: metrics read one logit per
answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from mechjax.errors import InputError
from mechjax.metrics import LogitDiff

__all__ = [
    "ABBA_TEMPLATES", "BABA_TEMPLATES", "TaskBatch", "TaskError", "arithmetic",
    "factual_recall", "from_pair", "greater_than", "induction", "ioi", "number_retrieval",
    "single_token",
]


class TaskError(InputError):
    """A task that cannot be built for this tokenizer (multi-token answers, no pairs)."""


@dataclasses.dataclass(frozen=True)
class TaskBatch:
    """Clean and corrupted prompts of equal length, with answer tokens.

    Attributes:
      clean, corrupted: int32 `[batch, pos]`.
      answers: int32 `[batch]`, the clean run's answer (IO name, result r, ...).
      wrongs: int32 `[batch]`, the competing answer (S name, the alt result r', ...).
      positions: name -> int32 `[batch]` (e.g. `IO`, `S1`, `S2`, `end`, `op1`).
      clean_text, corrupted_text: the prompts.
      task: the generator's name; `info`: extra per-task metadata.
    """

    clean: np.ndarray
    corrupted: np.ndarray
    answers: np.ndarray
    wrongs: np.ndarray
    positions: dict
    clean_text: tuple
    corrupted_text: tuple
    task: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def rows(self, index) -> "TaskBatch":
        """The pairs at `index` (a slice or an index array), with their positions, texts
        and per-row `info` arrays."""
        idx = np.arange(len(self))[index]
        n = len(self)
        info = {k: v[idx] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v
                for k, v in self.info.items()}
        return dataclasses.replace(
            self, clean=self.clean[idx], corrupted=self.corrupted[idx],
            answers=self.answers[idx], wrongs=self.wrongs[idx],
            positions={k: np.asarray(v)[idx] for k, v in self.positions.items()},
            clean_text=tuple(self.clean_text[i] for i in idx),
            corrupted_text=tuple(self.corrupted_text[i] for i in idx), info=info)

    def logit_diff(self) -> LogitDiff:
        """The metric logit[answer] - logit[wrong] at the last position, as a pytree."""
        return LogitDiff(np.asarray(self.answers), np.asarray(self.wrongs))

    def str_tokens(self, tokenizer, row: int = 0) -> list[str]:
        """The clean prompt's tokens of one row, decoded one by one (for plot labels)."""
        return [tokenizer.decode([int(t)]) for t in self.clean[row]]


# ------------------------------------------------------------------------------ helpers


def _encode(tokenizer, text: str, add_bos=None) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_bos=add_bos))
    except TypeError:  # a tokenizer without add_bos
        return list(tokenizer.encode(text))


def single_token(tokenizer, text: str) -> int:
    """The id of `text` if it is one token (no BOS) that decodes back to it, else
    `TaskError` naming the pieces (or the unknown-word token it became)."""
    ids = _encode(tokenizer, text, add_bos=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise TaskError(
            f"answer {text!r} is {len(ids)} tokens {pieces!r} for this tokenizer; metrics "
            "read one logit per answer, so answers must be single tokens")
    back = tokenizer.decode(ids)
    if back.strip().casefold() != text.strip().casefold():
        raise TaskError(
            f"answer {text!r} is one token that decodes to {back!r} (an unknown-word token?) "
            "for this tokenizer; the logit read would not be the answer's")
    return ids[0]


def _is_single(tokenizer, text: str) -> bool:
    """One token that decodes back to the text (an unknown-word token does not count)."""
    ids = _encode(tokenizer, text, add_bos=False)
    return len(ids) == 1 and tokenizer.decode(ids).strip() == text.strip()


def _build(rows, tokenizer, task, n, info=None) -> TaskBatch:
    """rows: dicts with clean, corrupted (texts), answer, wrong (ids), spans name -> char idx,
    and optionally a few-shot `prefix` put before both texts.

    Keeps the rows of the most frequent token length (clean == corrupted length), the
    first `n` of them in generation order.
    """
    enc = []
    for r in rows:
        if r.get("prefix"):  # few-shot examples before both prompts; spans shift with them
            pre = r["prefix"]
            r = {**r, "clean": pre + r["clean"], "corrupted": pre + r["corrupted"],
                 "spans": {k: v + len(pre) for k, v in r.get("spans", {}).items()}}
        c, k = _encode(tokenizer, r["clean"]), _encode(tokenizer, r["corrupted"])
        if len(c) == len(k):
            enc.append((r, c, k))
    if not enc:
        raise TaskError(f"{task}: no clean/corrupted pair has equal token lengths")
    lengths = [len(c) for _, c, _ in enc]
    best = max(sorted(set(lengths)), key=lengths.count)
    keep = [e for e in enc if len(e[1]) == best][:n]
    if len(keep) < n:
        raise TaskError(
            f"{task}: only {len(keep)} of the {n} requested pairs share one token length "
            f"({best}); ask for fewer or use fewer templates")
    positions: dict[str, list[int]] = {}
    for r, c, _ in keep:
        for name, char_idx in r.get("spans", {}).items():
            prefix = r["clean"][:char_idx]
            positions.setdefault(name, []).append(len(_encode(tokenizer, prefix)) - 1
                                                  if char_idx else 0)
        positions.setdefault("end", []).append(best - 1)
    return TaskBatch(
        clean=np.asarray([c for _, c, _ in keep], np.int32),
        corrupted=np.asarray([k for _, _, k in keep], np.int32),
        answers=np.asarray([r["answer"] for r, _, _ in keep], np.int32),
        wrongs=np.asarray([r["wrong"] for r, _, _ in keep], np.int32),
        positions={k: np.asarray(v, np.int32) for k, v in positions.items()},
        clean_text=tuple(r["clean"] for r, _, _ in keep),
        corrupted_text=tuple(r["corrupted"] for r, _, _ in keep),
        task=task,
        info=dict(info or {}),
    )


def from_pair(tokenizer, clean: str, corrupt: str, answer: str, wrong: str) -> TaskBatch:
    """One explicit pair (the command line's `--clean/--corrupt/--answer/--wrong`)."""
    row = {"clean": clean, "corrupted": corrupt, "answer": single_token(tokenizer, answer),
           "wrong": single_token(tokenizer, wrong)}
    c, k = _encode(tokenizer, clean), _encode(tokenizer, corrupt)
    if len(c) != len(k):
        raise TaskError(
            f"clean and corrupted prompts must have the same token length, got {len(c)} "
            f"and {len(k)} tokens")
    return _build([row], tokenizer, "pair", 1)


# ---------------------------------------------------------------------------------- IOI

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


def ioi(tokenizer, n: int = 32, seed: int = 0, *, counterfactual: str = "s2_io_flip",
        order: str = "mixed", templates: Sequence[str] | None = None) -> TaskBatch:
    """IOI pairs. answers = IO, wrongs = S (their logit difference is the IOI metric).

    Args:
      counterfactual: "s2_io_flip" (S2 replaced by IO: the answer flips to S) or "abc"
        (all three names replaced by unrelated names).
      order: "baba", "abba" or "mixed" (half each, interleaved).
      templates: override the templates (with [A], [B], [PLACE], [OBJECT]).
    Positions: IO, S1, S2 (last token of each name) and end.
    """
    if counterfactual not in ("s2_io_flip", "abc"):
        raise TaskError(f"counterfactual {counterfactual!r}; valid: 's2_io_flip', 'abc'")
    names = [x for x in NAMES if _is_single(tokenizer, " " + x)]
    places = [x for x in PLACES if _is_single(tokenizer, " " + x)]
    objects = [x for x in OBJECTS if _is_single(tokenizer, " " + x)]
    if len(names) < 5 or not places or not objects:
        raise TaskError(
            f"ioi: the tokenizer has too few single-token names/places/objects "
            f"({len(names)} names, {len(places)} places, {len(objects)} objects)")
    if templates is None:
        pools = {"baba": [BABA_TEMPLATES], "abba": [ABBA_TEMPLATES],
                 "mixed": [BABA_TEMPLATES, ABBA_TEMPLATES]}
        if order not in pools:
            raise TaskError(f"order {order!r}; valid: 'baba', 'abba', 'mixed'")
        pool = pools[order]
    else:
        pool = [tuple(templates)]
    rng = random.Random(seed)
    rows = []
    for i in range(n * 20):
        t = rng.choice(pool[i % len(pool)])
        a, b, c, d, e = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        clean, spans = _fill(t, a, b, place, obj)
        if counterfactual == "s2_io_flip":
            corrupted = clean[:spans["S2"] - len(b)] + a + clean[spans["S2"]:]
        else:
            abc, abc_spans = _fill(t, c, d, place, obj)
            s2 = abc_spans["S2"]
            corrupted = abc[:s2 - len(d)] + e + abc[s2:]
        rows.append({"clean": clean, "corrupted": corrupted, "spans": spans,
                     "answer": single_token(tokenizer, " " + a),
                     "wrong": single_token(tokenizer, " " + b)})
    return _build(rows, tokenizer, f"ioi/{counterfactual}", n,
                  {"counterfactual": counterfactual})


# --------------------------------------------------------------------------- arithmetic

ARITHMETIC_TEMPLATES = {
    "+": ("Q: How much is {x} plus {y}? A:", "Q: What is {x} plus {y}? A:",
          "Q: What is the result of {x} plus {y}? A:", "Q: What is the sum of {x} and {y}? A:",
          "The sum of {x} and {y} is", "{x} + {y} ="),
    "-": ("Q: How much is {x} minus {y}? A:", "Q: What is {x} minus {y}? A:",
          "Q: What is the result of {x} minus {y}? A:",
          "Q: What is the difference between {x} and {y}? A:",
          "The difference between {x} and {y} is", "{x} - {y} ="),
    "*": ("Q: How much is {x} times {y}? A:", "Q: What is {x} times {y}? A:",
          "Q: What is the result of {x} times {y}? A:",
          "Q: What is the product of {x} and {y}? A:", "The product of {x} and {y} is",
          "{x} * {y} ="),
    "/": ("Q: How much is {x} over {y}? A:", "Q: What is {x} over {y}? A:",
          "Q: What is the result of {x} over {y}? A:",
          "Q: What is the ratio between {x} and {y}? A:", "The ratio of {x} and {y} is",
          "{x} / {y} ="),
}
_OP_WORD_INDEX = (5, 4, 7, 4, 1, 1)  # the operator's word index in each template


def _calc(x: int, op: str, y: int):
    r = {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op]
    return int(r) if float(r).is_integer() else None


def _operands(rng, op, max_n, keep_result=False, base=None):
    """lm-arithmetic's `generate_operands_pair`: results in 1..res_max-1."""
    op_max, res_max = (300, 9) if max_n == 9 else (max_n, max_n)
    if keep_result:
        return _same_result(rng, op, op_max, max_n, base)
    for _ in range(200000):
        x, y = rng.randint(1, op_max), rng.randint(1, op_max)
        r = _calc(x, op, y)
        if r is None or not 1 <= r < res_max:
            continue
        if base is None:
            return x, y, r
        bx, by, br = base
        if max_n == 9 and (len(str(x)) != len(str(bx)) or len(str(y)) != len(str(by))):
            continue
        if r != br:
            return x, y, r
    raise TaskError(f"could not find operands for {op!r} with max_n={max_n}")


def _same_result(rng, op, op_max, max_n, base):
    """Other operands with the base's result (type 2), drawn from all such pairs.

    Enumerated (one candidate x per y), not sampled: a small result such as 2 = 1 + 1 has
    one or two decompositions among 300 x 300 operand pairs. The base pair itself is not
    a candidate (it would make the intervention a no-op); with no other pair, TaskError.
    """
    bx, by, br = base
    pairs = []
    for y in range(1, op_max):
        x = {"+": br - y, "-": br + y, "*": br // y if br % y == 0 else 0, "/": br * y}[op]
        if not 1 <= x < op_max or (x, y) == (bx, by) or _calc(x, op, y) != br:
            continue
        if max_n == 9 and (len(str(x)) != len(str(bx)) or len(str(y)) != len(str(by))):
            continue
        pairs.append((x, y))
    if not pairs:
        raise TaskError(f"no other operands than {bx} {op} {by} give {br}")
    x, y = pairs[rng.randrange(len(pairs))]
    return x, y, br


def _answer_text(tokenizer, prompt: str, number) -> tuple[str, int]:
    """(prompt, answer id): ' 5' if that is one token, else the prompt gets the space
    and the answer is '5' (digit-split tokenizers such as SmolLM2's)."""
    if _is_single(tokenizer, f" {number}"):
        return prompt, single_token(tokenizer, f" {number}")
    return prompt + " ", single_token(tokenizer, f"{number}")


def arithmetic(tokenizer, n: int = 32, seed: int = 0, *, op: str = "+",
               intervention: str = "result", template: int | None = None,
               max_n: int = 9, n_shots: int = 0) -> TaskBatch:
    """Arithmetic pairs of Stolfo et al. 2023 (base = clean, alt = corrupted).

    Args:
      op: "+", "-", "*" or "/".
      intervention: "result" (type 1: operands change, result changes), "same_result"
        (type 2) or "operator" (type 3: same operands, another operator; `op` is the
        base operator, the alt operator is drawn from the others).
      template: index into the 6 templates of `op`; None cycles through all of them.
      max_n: 9 = the paper's LLaMA setting (results 1..8).
      n_shots: solved examples of the same template before each prompt (the paper's
        `n_shots`: "{prompt} {result}\n" each, one prefix per template, drawn from the seed).
    answers = r (base result), wrongs = r' (alt result; equal to r for "same_result").
    Positions: op1, op2 (last token of each operand), operator, end.
    """
    if op not in ARITHMETIC_TEMPLATES:
        raise TaskError(f"op {op!r}; valid: {sorted(ARITHMETIC_TEMPLATES)}")
    if intervention not in ("result", "same_result", "operator"):
        raise TaskError(f"intervention {intervention!r}; valid: 'result', 'same_result', 'operator'")
    _check_shots(n_shots)
    rng = random.Random(seed)
    rows = []
    tids = range(6) if template is None else [template]
    shots_rng = random.Random(f"{seed}-shots")
    prefix = {t_id: "".join(
        "{} {}\n".format(ARITHMETIC_TEMPLATES[op][t_id].format(x=x, y=y), r)
        for x, y, r in (_operands(shots_rng, op, max_n) for _ in range(n_shots)))
        for t_id in tids}
    for i in range(n * (40 if n_shots and len(tids) > 1 else 10)):
        t_id = list(tids)[i % len(tids)]
        t = ARITHMETIC_TEMPLATES[op][t_id]
        if intervention == "operator":
            op2 = rng.choice([o for o in ARITHMETIC_TEMPLATES if o != op])
            for _ in range(100000):
                x, y = rng.randint(1, 300 if max_n == 9 else max_n), rng.randint(1, 300 if max_n == 9 else max_n)
                r, r2 = _calc(x, op, y), _calc(x, op2, y)
                lim = 9 if max_n == 9 else max_n
                if r is not None and r2 is not None and 1 <= r < lim and 1 <= r2 < lim:
                    break
            else:
                raise TaskError(f"no operands for operators {op!r} and {op2!r}")
            base_t, alt_t, (xa, ya) = t, ARITHMETIC_TEMPLATES[op2][t_id], (x, y)
        else:
            x, y, r = _operands(rng, op, max_n)
            try:
                xa, ya, r2 = _operands(rng, op, max_n, intervention == "same_result", (x, y, r))
            except TaskError:
                if intervention == "same_result":
                    continue  # this result has one decomposition only: draw another base
                raise
            base_t = alt_t = t
        clean = base_t.format(x=x, y=y)
        corrupted = alt_t.format(x=xa, y=ya)
        clean_p, ans = _answer_text(tokenizer, clean, r)
        corr_p, wrong = _answer_text(tokenizer, corrupted, r2)
        op_word = t.split(" ")[_OP_WORD_INDEX[t_id]]
        x_end = clean.index(str(x)) + len(str(x))
        y_end = clean.index(str(y), x_end) + len(str(y))
        op_end = clean.index(op_word, x_end if t_id != 3 and t_id != 4 else 0) + len(op_word)
        rows.append({"clean": clean_p, "corrupted": corr_p, "answer": ans, "wrong": wrong,
                     "spans": {"op1": x_end, "op2": y_end, "operator": op_end},
                     "results": (r, r2), "prefix": prefix[t_id]})
    return _build(rows, tokenizer, f"arithmetic/{intervention}", n,
                  {"op": op, "intervention": intervention, "n_shots": n_shots})


def _check_shots(n_shots) -> None:
    if not isinstance(n_shots, int) or n_shots < 0:
        raise TaskError(f"n_shots must be an integer >= 0, got {n_shots!r}")


# entity_dict.json of alestolfo/lm-arithmetic (MIT, licence file beside it), shipped
# with the package so the control task needs no download
_PACKAGED_DATA = Path(__file__).parent / "data" / "lm_arithmetic"


def _entities(data_dir) -> dict:
    d = Path(data_dir or os.environ.get("MECHJAX_LM_ARITHMETIC") or _PACKAGED_DATA)
    path = d / "entity_dict.json"
    if not path.is_file():
        raise TaskError(f"number_retrieval: no entity_dict.json in {d} (the lm-arithmetic "
                        "data folder, from data_dir= or $MECHJAX_LM_ARITHMETIC)")
    entities = json.loads(path.read_text())
    bad = [k for k, v in entities.items()
           if not (isinstance(v, list) and v and all(len(e) == 2 for e in v))]
    if len(entities) < 2 or bad:
        raise TaskError(f"number_retrieval: {path} must map at least two classes to lists of "
                        f"[singular, plural] names; bad classes: {bad}")
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


def number_retrieval(tokenizer, n: int = 32, seed: int = 0, *, data_dir=None,
                     max_n: int = 9, n_shots: int = 0) -> TaskBatch:
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
        rows.append({"clean": clean, "corrupted": corrupted, "answer": ans, "wrong": wrong,
                     "spans": {"op1": x_end, "op2": y_end}, "prefix": prefix[t]})
    return _build(rows, tokenizer, "number_retrieval", n, {"n_shots": n_shots})


FACTS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("Russia", "Moscow"), ("England", "London"), ("Egypt", "Cairo"),
    ("China", "Beijing"), ("Greece", "Athens"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Cuba", "Havana"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Canada", "Ottawa"), ("Sweden", "Stockholm"),
)


def factual_recall(tokenizer, n: int = 16, seed: int = 0) -> TaskBatch:
    """"The capital of {country} is" -> city; the corrupted prompt names another country.

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
        rows.append({"clean": clean, "corrupted": f"The capital of {c2} is",
                     "answer": single_token(tokenizer, " " + a1),
                     "wrong": single_token(tokenizer, " " + a2),
                     "spans": {"subject": len("The capital of ") + len(c1)}})
    return _build(rows, tokenizer, "factual_recall", n)


NOUNS = ("war", "dynasty", "reign", "expedition", "siege", "occupation", "strike",
         "campaign", "drought", "famine")


def greater_than(tokenizer, n: int = 32, seed: int = 0) -> TaskBatch:
    """Hanna et al. (2023): "The war lasted from the year 17YY to the year 17" -> > YY.

    The corrupted prompt starts the range at year XX01. answers = YY + 1 (the smallest
    correct two-digit continuation), wrongs = YY - 1; `info["years"]` holds YY per row for
    the probability-difference metric. Needs two-digit numbers to be single tokens
    (GPT-2-style tokenizers); a digit-split tokenizer raises `TaskError`.
    """
    single_token(tokenizer, "32")  # raises for digit-split vocabularies
    rng = random.Random(seed)
    rows, years = [], []
    for _ in range(n * 10):
        noun, century = rng.choice(NOUNS), rng.randint(11, 17)
        yy = rng.randint(2, 98)
        clean = f"The {noun} lasted from the year {century}{yy:02d} to the year {century}"
        corrupted = f"The {noun} lasted from the year {century}01 to the year {century}"
        rows.append({"clean": clean, "corrupted": corrupted,
                     "answer": single_token(tokenizer, f"{yy + 1:02d}"),
                     "wrong": single_token(tokenizer, f"{yy - 1:02d}"),
                     "spans": {"year": clean.index(f"{century}{yy:02d}") + 4}})
        years.append(yy)
    batch = _build(rows, tokenizer, "greater_than", n)
    keep = [t for t in batch.clean_text]
    yy = [int(t.split(" to the year")[0][-2:]) for t in keep]
    return dataclasses.replace(batch, info={"years": np.asarray(yy, np.int32)})


def induction(d_vocab: int, n: int = 8, seed: int = 0, *, half: int = 10, bos: int | None = None,
              low: int = 0) -> TaskBatch:
    """Repeated random tokens: clean = [bos] R R[:-1], answer R[-1].

    The corrupted prompt replaces the first half by other random tokens R', so the
    second half is no longer predictable; wrongs = R'[-1]. No tokenizer needed.
    Positions: prev (the first occurrence of the answer), end.
    """
    rng = np.random.RandomState(seed)
    r = rng.randint(low, d_vocab, (n, half))
    r2 = rng.randint(low, d_vocab, (n, half))
    same = r2 == r
    r2[same] = (r2[same] + 1 - low) % (d_vocab - low) + low
    prefix = np.full((n, 0 if bos is None else 1), bos if bos is not None else 0)
    clean = np.concatenate([prefix, r, r[:, :-1]], 1).astype(np.int32)
    corrupted = np.concatenate([prefix, r2, r[:, :-1]], 1).astype(np.int32)
    p = prefix.shape[1]
    return TaskBatch(
        clean=clean, corrupted=corrupted, answers=r[:, -1].astype(np.int32),
        wrongs=r2[:, -1].astype(np.int32),
        positions={"prev": np.full(n, p + half - 1, np.int32),
                   "end": np.full(n, clean.shape[1] - 1, np.int32)},
        clean_text=(), corrupted_text=(), task="induction")
