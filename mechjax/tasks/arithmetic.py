"""Two-operand arithmetic of Stolfo et al. (EMNLP 2023).

The templates and operand-pair generator of `alestolfo/lm-arithmetic`
(`interventions/intervention.py`): result changes (type 1), same result (type 2) or
changed operator (type 3). `max_n=9` is the paper's LLaMA setting (results 1..8,
operands up to 300 with the same digit count in base and alt).
"""

from __future__ import annotations

import random
from typing import no_type_check

from mechjax.tasks.batch import TaskBatch, TaskError, _build, _is_single, single_token

ARITHMETIC_TEMPLATES = {
    "+": (
        "Q: How much is {x} plus {y}? A:",
        "Q: What is {x} plus {y}? A:",
        "Q: What is the result of {x} plus {y}? A:",
        "Q: What is the sum of {x} and {y}? A:",
        "The sum of {x} and {y} is",
        "{x} + {y} =",
    ),
    "-": (
        "Q: How much is {x} minus {y}? A:",
        "Q: What is {x} minus {y}? A:",
        "Q: What is the result of {x} minus {y}? A:",
        "Q: What is the difference between {x} and {y}? A:",
        "The difference between {x} and {y} is",
        "{x} - {y} =",
    ),
    "*": (
        "Q: How much is {x} times {y}? A:",
        "Q: What is {x} times {y}? A:",
        "Q: What is the result of {x} times {y}? A:",
        "Q: What is the product of {x} and {y}? A:",
        "The product of {x} and {y} is",
        "{x} * {y} =",
    ),
    "/": (
        "Q: How much is {x} over {y}? A:",
        "Q: What is {x} over {y}? A:",
        "Q: What is the result of {x} over {y}? A:",
        "Q: What is the ratio between {x} and {y}? A:",
        "The ratio of {x} and {y} is",
        "{x} / {y} =",
    ),
}
_OP_WORD_INDEX = (5, 4, 7, 4, 1, 1)  # the operator's word index in each template


@no_type_check  # millions of calls by rejection sampling: tests' run-time checks skip it
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


def arithmetic(
    tokenizer,
    n: int = 32,
    seed: int = 0,
    *,
    op: str = "+",
    intervention: str = "result",
    template: int | None = None,
    max_n: int = 9,
    n_shots: int = 0,
) -> TaskBatch:
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
        raise TaskError(
            f"intervention {intervention!r}; valid: 'result', 'same_result', 'operator'"
        )
    _check_shots(n_shots)
    rng = random.Random(seed)
    rows = []
    tids = range(6) if template is None else [template]
    shots_rng = random.Random(f"{seed}-shots")
    prefix = {
        t_id: "".join(
            "{} {}\n".format(ARITHMETIC_TEMPLATES[op][t_id].format(x=x, y=y), r)
            for x, y, r in (_operands(shots_rng, op, max_n) for _ in range(n_shots))
        )
        for t_id in tids
    }
    for i in range(n * (40 if n_shots and len(tids) > 1 else 10)):
        t_id = list(tids)[i % len(tids)]
        t = ARITHMETIC_TEMPLATES[op][t_id]
        if intervention == "operator":
            op2 = rng.choice([o for o in ARITHMETIC_TEMPLATES if o != op])
            for _ in range(100000):
                x, y = (
                    rng.randint(1, 300 if max_n == 9 else max_n),
                    rng.randint(1, 300 if max_n == 9 else max_n),
                )
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
        rows.append(
            {
                "clean": clean_p,
                "corrupted": corr_p,
                "answer": ans,
                "wrong": wrong,
                "spans": {"op1": x_end, "op2": y_end, "operator": op_end},
                "results": (r, r2),
                "prefix": prefix[t_id],
            }
        )
    return _build(
        rows,
        tokenizer,
        f"arithmetic/{intervention}",
        n,
        {"op": op, "intervention": intervention, "n_shots": n_shots},
    )


def _check_shots(n_shots) -> None:
    if not isinstance(n_shots, int) or n_shots < 0:
        raise TaskError(f"n_shots must be an integer >= 0, got {n_shots!r}")
