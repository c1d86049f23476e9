"""The instruction-following data of Stolfo et al. (2025), shipped with the package.

From `microsoft/llm-steer-instruct` (MIT licence, `data/LICENSE.txt`; commit 9dac937):

- `ifeval_single_instr_format.jsonl`: 163 IFEval queries with one format instruction,
  with and without it (`prompt`, `prompt_without_instruction`), the instruction id and
  the checker's kwargs;
- `ifeval_single_keyword_include.jsonl` / `..._exclude.jsonl`: 86 / 117 queries with one
  keyword inclusion / exclusion instruction;
- `ifeval_wo_instructions.jsonl`: all 541 IFEval queries with every instruction removed
  (the field `model_output`), trimmed here to the fields the code reads (the long
  meta-prompt that produced them is dropped).

The paper computes format vectors on an augmented set (every instruction-free query x
every instruction phrasing) that is not redistributable offline; `augmented_pairs`
rebuilds the same design from these files: the instruction sentence of each evaluation
example (its `prompt` minus `prompt_without_instruction`) appended to instruction-free
queries whose IFEval key is not an evaluation key.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from mechjax.errors import InputError

DATA = Path(__file__).parent / "data"

# the phrasings the original code appends to build keyword pairs
INCLUDE_PHRASINGS = (
    ' Make sure to include the word "{}".',
    ' Please include the word "{}".',
    ' The output should contain the word "{}".',
    ' The output must contain the word "{}".',
    ' The output should say the word "{}".',
)
EXCLUDE_PHRASINGS = (
    " Do not include the word {}.",
    ' Make sure not to include the word "{}".',
    " Do not use the word {}.",
    ' Do not say "{}".',
    ' Please exclude the word "{}".',
    ' The output should not contain the word "{}".',
)


class Example(NamedTuple):
    """One query with one instruction: the two prompts, the checker id and kwargs."""

    key: int
    prompt: str  # with the instruction
    prompt_without_instruction: str
    instruction_id: str
    kwargs: dict

    @property
    def instruction(self) -> str | None:
        """The instruction sentence(s): the prompt minus the instruction-free query, when
        the prompt starts with it (None otherwise)."""
        base = self.prompt_without_instruction.strip()
        if self.prompt.startswith(base) and len(self.prompt) > len(base):
            return self.prompt[len(base) :].strip()
        return None


def _jsonl(name: str) -> list[dict]:
    path = DATA / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _clean(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


@lru_cache(maxsize=None)
def _examples(name: str) -> tuple[Example, ...]:
    out = []
    for r in _jsonl(name):
        out.append(
            Example(
                int(r["key"]),
                r["prompt"],
                r["prompt_without_instruction"],
                r["instruction_id_list"][0],
                _clean(r["kwargs"][0]),
            )
        )
    return tuple(out)


def format_examples(instruction_id: str | None = None) -> list[Example]:
    """The format-instruction examples (all, or those of one instruction id)."""
    rows = list(_examples("ifeval_single_instr_format.jsonl"))
    if instruction_id is None:
        return rows
    sel = [e for e in rows if e.instruction_id == instruction_id]
    if not sel:
        valid = sorted({e.instruction_id for e in rows})
        raise InputError(
            f"no format examples for {instruction_id!r}; ids in the data: {', '.join(valid)}"
        )
    return sel


def keyword_examples(kind: str) -> list[Example]:
    """The keyword examples: `kind` "include" (keywords:existence) or "exclude"."""
    if kind not in ("include", "exclude"):
        raise InputError(f"keyword kind {kind!r}; valid: include, exclude")
    return list(_examples(f"ifeval_single_keyword_{kind}.jsonl"))


@lru_cache(maxsize=None)
def _base() -> tuple[dict, ...]:
    return tuple(_jsonl("ifeval_wo_instructions.jsonl"))


def base_queries(*, exclude_keys=(), without: str | None = None) -> list[str]:
    """Instruction-free queries (`model_output`), in file order, skipping the IFEval keys
    in `exclude_keys` and, with `without` (an id prefix such as "keywords:"), queries whose
    original prompt had such an instruction."""
    keys = set(int(k) for k in exclude_keys)
    out = []
    for r in _base():
        if int(r["key"]) in keys:
            continue
        if without and any(i.startswith(without) for i in r["instruction_id_list"]):
            continue
        out.append(r["model_output"].strip())
    return out


def split_base(n_vector: int, n_valid: int, *, exclude_keys=(), seed: int = 0, without=None):
    """(vector queries, validation queries): disjoint, shuffled with `seed`."""
    qs = base_queries(exclude_keys=exclude_keys, without=without)
    if n_vector + n_valid > len(qs):
        raise InputError(
            f"asked for {n_vector} + {n_valid} base queries, only {len(qs)} are available"
        )
    random.Random(seed).shuffle(qs)
    return qs[:n_vector], qs[n_vector : n_vector + n_valid]


def augmented_pairs(
    examples: list[Example], queries: list[str], *, seed: int = 0
) -> tuple[list[str], list[str], list[dict]]:
    """(with, without, kwargs): each query with an instruction sentence drawn (cycling,
    shuffled with `seed`) from `examples`, and the checker kwargs of that sentence."""
    phr = [(e.instruction, e.kwargs) for e in examples if e.instruction]
    if not phr:
        raise InputError("none of the examples has a separable instruction sentence")
    rng = random.Random(seed)
    rng.shuffle(phr)
    with_i, without_i, kws = [], [], []
    for i, q in enumerate(queries):
        text, kw = phr[i % len(phr)]
        with_i.append(f"{q} {text}")
        without_i.append(q)
        kws.append(kw)
    return with_i, without_i, kws


def keyword_pairs(word: str, queries: list[str], kind: str) -> tuple[list[str], list[str]]:
    """(with, without) pairs asking to include / exclude `word`, phrasings cycled."""
    phrasings = {"include": INCLUDE_PHRASINGS, "exclude": EXCLUDE_PHRASINGS}.get(kind)
    if phrasings is None:
        raise InputError(f"keyword kind {kind!r}; valid: include, exclude")
    with_i = [q + phrasings[i % len(phrasings)].format(word) for i, q in enumerate(queries)]
    return with_i, list(queries)
