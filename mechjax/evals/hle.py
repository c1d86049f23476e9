"""Scoring in the manner of Humanity's Last Exam (Phan et al. 2025), and a local runner.

`score` turns model outputs and gold answers into `HLEMetrics`: accuracy over *all*
questions (an unparseable or missing answer is wrong, and counted in
`n_unparseable`), the Wald 95% half-width, and the RMS calibration error with bins of
100 both as HLE computes it (its loop skips the last bin) and fixed (every bin). A
missing confidence takes HLE's judge default of 100% and is counted in
`n_missing_confidence`; it is never dropped. (HLE's own script leaves questions without
a judge response out of the calibration error while counting them wrong in the
accuracy; here every question enters both, a missing one as wrong at 100%.)

Judging is exact match after normalisation (`answers.judge`): there is no judge model
offline, so an answer that a judge LLM would accept as equivalent but that is phrased
differently is counted wrong.

`run_jsonl(model, path)` runs a local JSONL question file (fields `id`, `question`,
`answer`, `answer_type` = "exactMatch" or "multipleChoice", optional `choices`) through
`mechjax.generate` with a prompt asking for Explanation / Answer / Confidence, then
parses and scores the outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mechjax.evals.answers import ParsedResponse, judge, parse_response
from mechjax.evals.calibration import Flags, Numbers, accuracy, calibration_error, wald_interval

__all__ = [
    "HLEMetrics",
    "Judged",
    "build_prompt",
    "load_jsonl",
    "run_jsonl",
    "score",
    "score_judged",
]


def _format(what: str) -> str:
    return (
        "Give your response in this format:\n"
        "Explanation: {your reasons}\n"
        "Answer: {" + what + "}\n"
        "Confidence: {how sure you are, from 0% to 100%}"
    )


@dataclasses.dataclass(frozen=True)
class Judged:
    """One question after parsing and judging."""

    id: str
    gold: str
    parsed: ParsedResponse
    correct: bool


@dataclasses.dataclass(frozen=True)
class HLEMetrics:
    """HLE's numbers for one run (percentages unrounded; `hle_rounded` rounds as HLE).

    `calibration_error_hle` skips the last bin as HLE's loop does (nan below 100
    questions, where HLE's code fails); `calibration_error_fixed` sums every bin.
    """

    n: int
    n_correct: int
    n_unparseable: int
    n_missing_confidence: int
    accuracy: float
    half_width: float
    calibration_error_hle: float
    calibration_error_fixed: float
    beta: int = 100

    def hle_rounded(self) -> dict[str, float]:
        """accuracy and half-width to 2 decimals, calibration as 100 * round(cerr, 2)."""
        acc = round(self.accuracy, 2)
        cal = self.calibration_error_hle
        return {
            "accuracy": acc,
            "half_width": round(wald_interval(acc, self.n), 2),
            "calibration_error": cal if math.isnan(cal) else 100 * round(cal / 100, 2),
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def score_judged(
    correct: Flags,
    confidence_percent: Numbers,
    *,
    n_unparseable: int = 0,
    n_missing_confidence: int = 0,
    beta: int = 100,
) -> HLEMetrics:
    """`HLEMetrics` from per-question correctness and confidence (percent), one per question."""
    c = np.asarray(correct, bool).reshape(-1)
    conf = np.asarray(confidence_percent, np.float64).reshape(-1) / 100.0
    if c.shape != conf.shape:
        raise ValueError(f"{c.size} correctness values but {conf.size} confidences")
    n = c.size
    acc = accuracy(c, n)
    hle = calibration_error(conf, c, beta, skip_last=True) if n >= beta else math.nan
    return HLEMetrics(
        n=n,
        n_correct=int(c.sum()),
        n_unparseable=int(n_unparseable),
        n_missing_confidence=int(n_missing_confidence),
        accuracy=acc,
        half_width=wald_interval(acc, n),
        calibration_error_hle=hle,
        calibration_error_fixed=calibration_error(conf, c, beta, skip_last=False),
        beta=beta,
    )


def score(
    outputs: Sequence[str | None],
    golds: Sequence[str],
    answer_types: Sequence[str] | str = "exactMatch",
    ids: Sequence[str] | None = None,
    *,
    beta: int = 100,
    rel_tol: float = 0.0,
) -> tuple[HLEMetrics, list[Judged]]:
    """Parse each output, judge it against its gold answer, and compute `HLEMetrics`.

    `outputs[i]` None (no response) is judged wrong with confidence 100, like an
    unparseable one; every question counts in n. `rel_tol` > 0 accepts numeric answers
    within that relative tolerance (HLE's judge allows "a small margin of error").
    """
    if len(outputs) != len(golds):
        raise ValueError(f"{len(outputs)} outputs for {len(golds)} questions")
    types = [answer_types] * len(golds) if isinstance(answer_types, str) else list(answer_types)
    ids = [str(i) for i in range(len(golds))] if ids is None else [str(i) for i in ids]
    judged = []
    for i, out, gold, kind in zip(ids, outputs, golds, types):
        p = parse_response(out)
        ok = judge(p.answer, str(gold), kind, rel_tol=rel_tol)
        judged.append(Judged(i, str(gold), p, ok))
    metrics = score_judged(
        [j.correct for j in judged],
        [j.parsed.confidence for j in judged],
        n_unparseable=sum(j.parsed.answer is None for j in judged),
        n_missing_confidence=sum(j.parsed.confidence_missing for j in judged),
        beta=beta,
    )
    return metrics, judged


def load_jsonl(path: str | Path) -> list[dict]:
    """The questions of a JSONL file; each needs `question` and `answer`."""
    rows = []
    for k, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        for key in ("question", "answer"):
            if key not in row:
                raise ValueError(f"{path}: line {k + 1} has no {key!r} field")
        row.setdefault("id", str(k))
        row.setdefault("answer_type", "multipleChoice" if row.get("choices") else "exactMatch")
        rows.append(row)
    return rows


def build_prompt(row: dict) -> str:
    """The question (with lettered choices for multiple choice) and the response format."""
    text = str(row["question"]).strip()
    choices = row.get("choices")
    if choices:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        text += "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))
        fmt = _format("your chosen letter")
    else:
        fmt = _format("your short final answer")
    return f"{text}\n\n{fmt}\n\nExplanation:"


def run_jsonl(
    model,
    path: str | Path,
    *,
    max_new_tokens: int = 64,
    chat: bool = False,
    batch_size: int = 8,
    beta: int = 100,
    generate_fn: Callable | None = None,
) -> tuple[HLEMetrics, list[Judged]]:
    """Prompt the model with each question of a JSONL file, generate greedily, score.

    The prompt ends with "Explanation:", so the generated text is prefixed with it before
    parsing. Outputs that do not parse count as wrong (`HLEMetrics.n_unparseable`).
    `generate_fn(model, prompts, max_new_tokens, chat=...)` returns the texts (a list, or
    a `Generation`); it defaults to greedy `mechjax.generation.generate_texts` with
    `batch_size` rows per compiled call.
    """
    if generate_fn is None:
        from mechjax import generation

        def batched(model, prompts, max_new_tokens, chat=False):
            return generation.generate_texts(
                model, prompts, max_new_tokens, batch=batch_size, chat=chat
            )

        generate_fn = batched

    rows = load_jsonl(path)
    outputs: list[str | None] = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        gen = generate_fn(model, [build_prompt(r) for r in chunk], max_new_tokens, chat=chat)
        texts = getattr(gen, "texts", gen) or [None] * len(chunk)
        outputs += [None if t is None else "Explanation:" + t for t in texts]
    return score(
        outputs,
        [str(r["answer"]) for r in rows],
        [r["answer_type"] for r in rows],
        [r["id"] for r in rows],
        beta=beta,
    )
