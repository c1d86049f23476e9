"""`mechjax eval hle FILE MODEL`: a local JSONL question file scored as Humanity's Last Exam
scores its models; `mechjax eval questions OUT`: an offline question file to run it on.

`hle` prompts for Explanation / Answer / Confidence (`mechjax.evals.hle.build_prompt`),
generates greedily, parses each response and judges the answer by normalised exact match
(multiple choice: the letter). There is no judge model offline, so an answer a judge LLM
would accept in other words is counted wrong. Every question counts: an answer that does
not parse is wrong, and a missing confidence takes HLE's default of 100%; both are
counted and printed. It prints accuracy with the Wald 95% half-width and the RMS
calibration error (bins of 100) both as HLE computes it (its loop skips the last bin; n/a
below 100 questions) and with every bin; `--out` writes the metrics and every judged
question as JSON.

`questions` writes MathWorld-style word problems (`mechjax.evals.worlds`, one and two
operations) as such a file: exact-match questions, and with `--choices` every second one
as a four-way multiple choice with numeric distractors.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any


def word_problem_questions(n: int, seed: int = 0, choices: bool = False) -> list[dict]:
    """`n` question rows (`id`, `question`, `answer`, `answer_type`, maybe `choices`)."""
    from mechjax.evals import worlds

    rng = random.Random(seed)
    half = n // 2
    problems = worlds.generate_many(half, seed, n_steps=1)
    problems += worlds.generate_many(n - half, seed + 1, n_steps=2)
    rows = []
    for k, p in enumerate(problems):
        row: dict[str, Any] = {"id": f"wp-{k}", "question": p.text, "answer": str(p.answer)}
        if choices and k % 2:
            wrong = {p.answer + d for d in (-10, -2, -1, 1, 2, 10) if p.answer + d >= 0}
            opts = [p.answer, *rng.sample(sorted(wrong), 3)]
            rng.shuffle(opts)
            row["choices"] = [str(o) for o in opts]
            row["answer"] = "ABCD"[opts.index(p.answer)]
            row["answer_type"] = "multipleChoice"
        else:
            row["answer_type"] = "exactMatch"
        rows.append(row)
    return rows


def cmd_questions(args) -> int:
    rows = word_problem_questions(args.n, args.seed, args.choices)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    n_mc = sum(r["answer_type"] == "multipleChoice" for r in rows)
    print(f"wrote {len(rows)} questions ({n_mc} multiple choice) to {path}")
    return 0


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def cmd_hle(args) -> int:
    import mechjax as mj
    from mechjax.errors import InputError
    from mechjax.evals import hle

    path = Path(args.file)
    if not path.is_file():
        raise InputError(f"no question file at {path}")
    try:
        n_rows = len(hle.load_jsonl(path))
    except (ValueError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: {e}") from None
    if n_rows == 0:
        raise InputError(f"{path} has no questions")
    model = mj.load(args.model)

    metrics, judged = hle.run_jsonl(
        model,
        path,
        max_new_tokens=args.max_new_tokens,
        chat=args.chat,
        batch_size=args.batch,
    )
    m = metrics
    print(f"{args.model} on {path} ({m.n} questions; exact-match judging, no judge model)")
    print(f"  accuracy           {m.accuracy:.2f}% +/- {m.half_width:.2f} (Wald 95%)")
    print(f"  calibration error  {_pct(m.calibration_error_hle)} (HLE: last bin skipped)")
    print(f"                     {_pct(m.calibration_error_fixed)} (every bin)")
    print(f"  unparseable        {m.n_unparseable} (counted wrong)")
    print(f"  missing confidence {m.n_missing_confidence} (taken as 100%)")
    if args.out:
        rows = [
            {
                "id": j.id,
                "gold": j.gold,
                "answer": j.parsed.answer,
                "confidence": j.parsed.confidence,
                "correct": j.correct,
            }
            for j in judged
        ]
        out = {"model": args.model, "file": str(path), "metrics": m.to_dict(), "questions": rows}
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.out}")
    return 0
