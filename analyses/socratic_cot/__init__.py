"""`mechjax reproduce socratic-cot`: "Distilling Reasoning Capabilities into Smaller Language
Models" (Shridhar, Stolfo, Sachan; ACL Findings 2023), Socratic chain-of-thought, as an
offline analogue.

    mechjax reproduce socratic-cot --out DIR [--quick] [--smoke]

The paper (its abstract and method section): a large teacher (GPT-3) decomposes each training
problem into subquestion / solution pairs; two GPT-2 students learn from them, a problem
decomposer (QG: the problem and earlier subquestions -> the next subquestion) and a
subproblem solver (QA: the problem, earlier pairs and the subquestion -> its solution),
which answer new problems in a loop with no teacher; a single unified student writing
both is the variant. Baselines: answer-only fine-tuning and ordinary CoT distillation.
Expected, scaled down (`../shared/reference/methods.md` section 1): Socratic and CoT well
above answer-only, Socratic >= CoT as the number of steps grows; the abstract reports
over 70% improvement over the baselines on GSM8K, StrategyQA and SVAMP, and GPT-2 large
with Socratic CoT above a 10x larger GPT-3 (6B) trained with CoT.

What runs here: multi-step arithmetic word problems from `mechjax.evals.worlds` with
additive steps (transfers, comparisons by "more" / "fewer", part-whole); the rule-based
teacher
`mechjax.evals.socratic.teach` writes the three formats from each problem with the same
arithmetic; per model size, five students are trained from scratch with
`mechjax.training` (Llama configs, `students.py`): answer-only, CoT, unified Socratic, and
the pair (decomposer, solver); then greedy inference (the pair in its loop) on held-out
problems of the training chain lengths (2-4 steps) and longer (5, 6), exact match of the
final answer.

Fidelity: no GSM8K, no GPT-3 teacher, no pretrained GPT-2 offline, so this is an analogue
of the mechanism, not of the numbers. The teacher is exact (the paper filters GPT-3's
chains by their final answer), the problems are templated (one sentence per step, in
order) and additive (multiplicative relations left out so that small students can learn
the arithmetic in the run's budget), the students read a closed word vocabulary with
numbers digit by digit, and they are small transformers trained from scratch rather
than fine-tuned GPT-2 (124M-774M).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("answer", "cot", "socratic", "unified")  # what is evaluated
STUDENTS = ("answer", "cot", "unified", "qg", "qa")  # what is trained

_BASE: dict[str, Any] = {
    "train_steps_range": [2, 3, 4],
    "test_steps_range": [2, 3, 4, 5, 6],
    "lo": 2,
    "hi": 9,
    # additive steps only: transfers, comparisons by more / fewer, part-whole
    "ops": [
        ["transfer", "+"],
        ["transfer", "-"],
        ["comparison", "+"],
        ["comparison", "-"],
        ["part_whole", "+"],
    ],  # fmt: skip
    "n_train": 8000,
    "n_test": 60,  # per chain length
    "sizes": {
        "small": {"d_model": 64, "n_layers": 2, "n_heads": 4},
        "base": {"d_model": 96, "n_layers": 3, "n_heads": 4},
    },
    "steps": 800,
    "batch": 32,
    "lr": 3e-3,
    "warmup": 100,
    "weight_decay": 0.01,
    "gen_batch": 60,
    "gen_bucket": 32,  # prompt widths are rounded up to a multiple of this
    "max_pair_steps": 8,
    "seed": 0,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "full": _BASE,
    "quick": {
        **_BASE,
        "test_steps_range": [2, 3, 4, 5],
        "n_train": 4000,
        "n_test": 40,
        "sizes": {"small": _BASE["sizes"]["small"]},
        "steps": 400,
        "gen_batch": 40,
    },
    "smoke": {  # seconds, for tests: numbers not meaningful
        **_BASE,
        "train_steps_range": [2],
        "test_steps_range": [2, 3],
        "n_train": 64,
        "n_test": 4,
        "sizes": {"tiny": {"d_model": 16, "n_layers": 1, "n_heads": 2}},
        "steps": 4,
        "batch": 8,
        "warmup": 2,
        "gen_batch": 8,
        "gen_bucket": 128,  # one prompt width: fewer programs to compile
        "max_pair_steps": 3,
    },
}


def datasets(settings: dict) -> dict:
    """Training supervision and the held-out test problems (none of their texts in training)."""
    from mechjax.analyses.socratic_cot.data import problems
    from mechjax.evals.socratic import teach

    s = settings
    ops = [tuple(p) for p in s["ops"]] if s.get("ops") else None
    train = [
        teach(p)
        for p in problems(
            s["n_train"], s["train_steps_range"], s["seed"], lo=s["lo"], hi=s["hi"], ops=ops
        )
    ]
    seen = {t.problem for t in train}
    test: dict[int, list] = {}
    overlap = 0
    for k in s["test_steps_range"]:
        drawn = problems(
            4 * s["n_test"], [k], 10_000 + 100 * s["seed"] + k, lo=s["lo"], hi=s["hi"], ops=ops
        )
        fresh = [teach(p) for p in drawn if p.text not in seen]
        overlap += len(drawn) - len(fresh)
        test[k] = fresh[: s["n_test"]]
    return {"train": train, "test": test, "overlap_dropped": overlap}


def _evaluate(preds, sups) -> dict:
    correct = [p.answer == s.answer for p, s in zip(preds, sups)]
    steps_right = [p.n_steps == len(s.steps) for p, s in zip(preds, sups)]
    return {
        "exact_match": float(np.mean(correct)),
        "steps_match": float(np.mean(steps_right)),
        "n": len(sups),
        "correct": [int(c) for c in correct],  # per test problem, for paired bootstraps
        "examples": [
            {"problem": s.problem, "gold": s.answer, "output": p.output, "answer": p.answer}
            for p, s in list(zip(preds, sups))[:2]
        ],
    }


def run_size(name: str, size: dict, data: dict, settings: dict, stages, ckpt: Path) -> dict:
    """Train the five students of one size and evaluate the four methods."""
    import jax

    from mechjax import training
    from mechjax.analyses.socratic_cot import students as S
    from mechjax.analyses.socratic_cot.data import build_vocab, encode_set

    vocab = build_vocab()
    cfg = S.model_config(size, len(vocab))
    s = settings
    step_fn = training.make_train_step(*S.objective(cfg, s))
    params: dict = {}
    curves: dict = {}
    out: dict = {"config": size, "curves": curves}
    for fmt in STUDENTS:
        with stages.stage(f"{name}: train {fmt}"):
            enc = encode_set(vocab, data["train"], fmt)
            params[fmt], curves[fmt] = S.train_student(
                enc, cfg, s, seed=s["seed"], progress=stages.show, out_dir=ckpt / name / fmt,
                step_fn=step_fn,
            )  # fmt: skip
        stages.log(
            f"  {name} {fmt}: final loss {curves[fmt][-1][1]}, token acc {curves[fmt][-1][2]}"
        )
    out["n_params"] = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params["cot"]))
    results: dict = {m: {} for m in METHODS + ("solver_gold_questions",)}
    with stages.stage(f"{name}: evaluate"):
        for k, sups in data["test"].items():
            texts = [x.problem for x in sups]
            # one budget for the three (one compiled loop; a row stops at its <eos>):
            # a unified step is at most about 28 tokens with numbers digit by digit
            max_new = 28 * (max(s["test_steps_range"]) + 1) + 8
            for m in ("answer", "cot", "unified"):
                preds = S.predict(
                    params[m], cfg, vocab, texts, max_new=max_new, batch=s["gen_batch"],
                    bucket=s["gen_bucket"],
                )  # fmt: skip
                results[m][str(k)] = _evaluate(preds, sups)
            preds = S.predict_pair(
                params["qg"], params["qa"], cfg, vocab, texts,
                max_steps=s["max_pair_steps"], batch=s["gen_batch"], bucket=s["gen_bucket"],
            )  # fmt: skip
            results["socratic"][str(k)] = _evaluate(preds, sups)
            # diagnosis: the solver given the teacher's subquestions (no decomposer errors)
            preds = S.predict_pair(
                params["qg"], params["qa"], cfg, vocab, texts,
                max_steps=s["max_pair_steps"], batch=s["gen_batch"], bucket=s["gen_bucket"],
                gold_questions=[[st.question for st in x.steps] for x in sups],
            )  # fmt: skip
            results["solver_gold_questions"][str(k)] = _evaluate(preds, sups)
            row = ", ".join(f"{m} {results[m][str(k)]['exact_match']:.2f}" for m in METHODS)
            stages.log(f"  {name}, {k} steps: {row}")
    out["results"] = results
    return out


def summary(details: dict, settings: dict) -> dict:
    """Exact match per method: in the training range, beyond it, and per chain length."""
    train = set(settings["train_steps_range"])
    out: dict = {}
    for name in settings["sizes"]:
        if name not in details or "results" not in details[name]:
            continue
        res = details[name]["results"]
        row: dict = {}
        for m in METHODS:
            per = {int(k): v["exact_match"] for k, v in res[m].items()}
            inside = [v for k, v in per.items() if k in train]
            beyond = [v for k, v in per.items() if k not in train]
            row[m] = {
                "per_steps": {str(k): per[k] for k in sorted(per)},
                "in_range": float(np.mean(inside)) if inside else None,
                "longer": float(np.mean(beyond)) if beyond else None,
            }
        out[name] = row
    return out


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    smoke: bool = False,
    progress: bool | None = None,
    keep_checkpoints: bool = False,
    log=print,
) -> dict:
    """Data, then per size five students trained and four methods evaluated; report."""
    from mechjax.analyses.socratic_cot.report import write_report
    from mechjax.analyses.stages import Stages, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = SETTINGS["smoke" if smoke else "quick" if quick else "full"]
    t0 = time.time()
    meta: dict = {
        "settings": {**settings, "quick": quick, "smoke": smoke, "models": list(settings["sizes"])}
    }
    details: dict = {}
    ckpt = out / "checkpoints"
    n_stages = 1 + len(settings["sizes"]) * (len(STUDENTS) + 1)
    with Stages(out / "details.json", n_stages, progress=progress, log=log) as st:
        st.save(meta)
        with st.stage("data"):
            data = datasets(settings)
        details["data"] = {
            "n_train": len(data["train"]),
            "n_test": {str(k): len(v) for k, v in data["test"].items()},
            "overlap_dropped": data["overlap_dropped"],
            "example": data["train"][0]._asdict() | {"socratic": data["train"][0].socratic},
        }
        st.save({"data": details["data"]})
        for name, size in settings["sizes"].items():
            details[name] = run_size(name, size, data, settings, st, ckpt)
            st.save({name: details[name]})
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(final), "complete": True})
    write_report(out, final, meta)
    if not keep_checkpoints:
        shutil.rmtree(ckpt, ignore_errors=True)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def results_table(details: dict, models: Sequence[str] | None = None) -> dict:
    """results.json: exact match per size and method (in range, longer, per chain length)."""
    settings = details["settings"]
    return {"exact_match": summary(details, settings), "sizes": list(settings["sizes"])}


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "socratic-cot",
        "Socratic CoT distillation (Shridhar, Stolfo, Sachan 2023) as an offline analogue.",
        quick_help="one model size, 4000 training problems, 400 steps per student (minutes)",
    )
    ap.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep DIR/checkpoints (a killed run resumes its students from them either way)",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce socratic-cot --out DIR [--quick] [--smoke]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce, keep_checkpoints="keep_checkpoints")


if __name__ == "__main__":
    raise SystemExit(main())
