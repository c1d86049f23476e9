"""`mechjax reproduce robustness`: "A Causal Framework to Quantify the Robustness of
Mathematical Reasoning with Language Models" (Stolfo, Jin et al., ACL 2023) on
SmolLM2-135M-Instruct and Gemma 3 270M.

    mechjax reproduce robustness --out DIR [--quick] [--models smollm2-135m gemma3-270m]

Per model and per problem length (one and two operations), with details.json rewritten
after every stage (`"complete": false` until the end):

1. pairs: (base, intervened) word problems from `mechjax.evals.robustness_pairs`, `n` per
   intervention type: `1b` (two operands change, the result changes: TCE(N -> R)), `2`
   (all operands change, the result is kept: DCE(N -> R)), `3` (surface text: DCE(S ->
   R)), `4` (the operation changes: TCE(T -> R)), and the controls `irrelevant` /
   `irrelevant_number` (an irrelevant sentence without / with a number; result kept).
2. P(R): the model's distribution over the numbers 0..max_n after
   `Q: {problem}\\nA: The answer (arabic numerals) is` (the paper's 0..300; numbers that
   the tokenizer splits into digits get their mean token log-probability,
   `number_probs.number_probs_batch`), for every base and intervened prompt.
3. measures per type: the estimand (relative confidence change where the result changes,
   confidence change where it is kept) with a 95% percentile bootstrap interval, both
   readings of the change in prediction (1[argmax changes] and |argmax P - argmax P'|),
   the odds-ratio change (what the reference code stores as "relative confidence
   change"), JS divergence, total variation, and the accuracy of argmax P on the base
   problems.

Pairs whose gold results fall outside 0..max_n cannot be scored on the restricted
distribution and are counted (`n_skipped`), never silently dropped. results.json holds
the four estimands of the pooled one- and two-operation pairs per model.

Departures from the paper (report.md says them too): templated MathWorld-style problems
(`mechjax.evals.worlds`) instead of SVAMP / ASDiv-A / MAWPS templates (not offline);
135M/270M models instead of GPT-2 to GPT-3 175B and LLaMA; no fine-tuned models.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
CONTROLS = ("irrelevant", "irrelevant_number")


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:  # seconds per model, for tests: numbers not meaningful
        return {"n": 3, "steps": [1], "max_n": 40, "lo": 2, "hi": 9, "batch": 4, "n_boot": 50}
    return {
        "n": 16 if quick else 50,
        "steps": [1] if quick else [1, 2],
        "max_n": 300,
        "lo": 2,
        "hi": 30,
        "batch": 8,
        "n_boot": 1000,
    }


def prompt(problem: str) -> str:
    """The paper's prompt, ending before the space that starts the number."""
    from mechjax.evals.robustness_eval import default_prompt

    return default_prompt(problem)


def make_pairs(n: int, n_steps: int, seed: int, lo: int, hi: int) -> dict[str, list]:
    """{estimand or control: pairs}: `n` pairs of each intervention type."""
    from mechjax.evals.robustness_eval import profile_pairs
    from mechjax.evals.robustness_pairs import intervention_pairs

    pairs = profile_pairs(n, seed=seed, n_steps=n_steps, lo=lo, hi=hi)
    for k, kind in enumerate(CONTROLS):
        pairs[kind] = intervention_pairs(kind, n, seed + 100 + k, n_steps, lo=lo, hi=hi)
    return pairs


def measures(p: np.ndarray, q: np.ndarray, r, r_alt, what: str, *, seed: int, n_boot: int) -> dict:
    """Every measure of one intervention type over its scored pairs (rows of p and q)."""
    from mechjax.evals import robustness as R
    from mechjax.evals.stats import bootstrap_ci

    r, r_alt = np.asarray(r), np.asarray(r_alt)
    if what in R.ESTIMANDS:
        e = R.estimate(what, p, q, r, r_alt, seed=seed, n_boot=n_boot)
        mean, ci, n_finite = e.mean, [e.ci[0], e.ci[1]], e.n
        measure = "relative_confidence_change" if R.ESTIMANDS[what][1] else "confidence_change"
    else:  # a control: the result is kept
        eff = R.confidence_change(p, q, r)
        eff = eff[np.isfinite(eff)]
        b = bootstrap_ci(eff, seed=seed, n_boot=n_boot)
        mean, ci, n_finite, measure = b.mean, [b.lo, b.hi], int(eff.size), "confidence_change"
    out = {
        "measure": measure,
        "mean": float(mean),
        "ci": [float(ci[0]), float(ci[1])],
        "n": n_finite,
        "prediction_changed": float(np.mean(R.prediction_changed(p, q))),
        "prediction_distance": float(np.mean(R.prediction_distance(p, q))),
        "js_divergence": float(np.mean(R.js_divergence(p, q))),
        "total_variation": float(np.mean(R.total_variation(p, q))),
        "base_accuracy": float(np.mean(p.argmax(-1) == r)),
        "alt_accuracy": float(np.mean(q.argmax(-1) == r_alt)),
        "p_gold_base": float(np.mean(p[np.arange(len(r)), r])),
    }
    if what in R.ESTIMANDS and R.ESTIMANDS[what][1]:
        orc = R.odds_ratio_change(p, q, r, r_alt)
        out["odds_ratio_change"] = float(np.mean(orc[np.isfinite(orc)]))
    return out


def _score(model, pairs: dict[str, list], settings: dict) -> dict[str, dict]:
    """P and P' for every scorable pair, in one batched call; rows kept per type."""
    from mechjax.evals.number_probs import number_probs_batch

    max_n = settings["max_n"]
    kept = {
        k: [x for x in rows if 0 <= x.base.answer <= max_n and 0 <= x.alt.answer <= max_n]
        for k, rows in pairs.items()
    }
    texts = [prompt(x.base.text) for rows in kept.values() for x in rows]
    texts += [prompt(x.alt.text) for rows in kept.values() for x in rows]
    probs = number_probs_batch(model, texts, list(range(max_n + 1)), batch=settings["batch"])
    n_all = len(texts) // 2
    out, at = {}, 0
    for k, rows in kept.items():
        sl = slice(at, at + len(rows))
        out[k] = {
            "p": probs[:n_all][sl],
            "q": probs[n_all:][sl],
            "r": [x.base.answer for x in rows],
            "r_alt": [x.alt.answer for x in rows],
            "n_skipped": len(pairs[k]) - len(rows),
            "examples": [{"base": x.base.text, "alt": x.alt.text} for x in rows[:2]],
        }
        at += len(rows)
    return out


def _summaries(scored: dict[str, dict], settings: dict, seed: int) -> dict[str, dict]:
    out = {}
    for k, s in scored.items():
        if not len(s["r"]):
            out[k] = {"n": 0, "n_skipped": s["n_skipped"], "mean": None, "ci": [None, None]}
            continue
        m = measures(s["p"], s["q"], s["r"], s["r_alt"], k, seed=seed, n_boot=settings["n_boot"])
        out[k] = {**m, "n_skipped": s["n_skipped"], "examples": s["examples"]}
    return out


def _pooled(scored_by_steps: dict[int, dict], settings: dict, seed: int) -> dict[str, dict]:
    """The measures over the one- and two-operation pairs together."""
    kinds = next(iter(scored_by_steps.values())).keys()
    pooled = {}
    for k in kinds:
        parts = [s[k] for s in scored_by_steps.values()]
        pooled[k] = {
            "p": np.concatenate([x["p"] for x in parts]),
            "q": np.concatenate([x["q"] for x in parts]),
            "r": sum((x["r"] for x in parts), []),
            "r_alt": sum((x["r_alt"] for x in parts), []),
            "n_skipped": sum(x["n_skipped"] for x in parts),
            "examples": [],
        }
    return _summaries(pooled, settings, seed)


def results_table(details: dict, models) -> dict:
    """The issue's layout: model -> estimand -> {"mean", "ci"} (one- and two-operation
    pairs pooled)."""
    from mechjax.evals.robustness import ESTIMANDS

    out = {}
    for name in models:
        pooled = details.get(name, {}).get("pooled")
        if not pooled:
            out[name] = {"error": "not run"}
            continue
        out[name] = {e: {"mean": pooled[e]["mean"], "ci": pooled[e]["ci"]} for e in ESTIMANDS}
    return out


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Every stage for every model; details.json, results.json and report.md."""
    import mechjax as mj
    from mechjax.analyses.robustness.report import write_report
    from mechjax.analyses.stages import Stages, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke, "seed": 0}
    t0 = time.time()
    details: dict = {}
    meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
    pairs = {
        k: make_pairs(settings["n"], k, settings["seed"] + 1000 * k, settings["lo"], settings["hi"])
        for k in settings["steps"]
    }
    with Stages(out / "details.json", len(models) * len(pairs), progress=progress, log=log) as st:
        st.save(meta)
        for name in models:
            model = mj.load(name)
            scored, details[name] = {}, {"by_steps": {}}
            for k, rows in pairs.items():
                with st.stage(f"{name}: {k}-operation problems"):
                    scored[k] = _score(model, rows, settings)
                    details[name]["by_steps"][str(k)] = _summaries(scored[k], settings, k)
                row = details[name]["by_steps"][str(k)]
                st.log(
                    f"{name} {k}-op: "
                    + ", ".join(f"{e} {row[e]['mean']:.3g}" for e in row if row[e]["n"])
                )
                st.save({name: details[name]})
            details[name]["pooled"] = _pooled(scored, settings, settings["seed"])
            st.save({name: details[name]})
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details, models), "complete": True})
    write_report(out, details, meta)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    return reproduction_parser(
        "robustness",
        "Reproduce 'A Causal Framework to Quantify the Robustness of Mathematical Reasoning'.",
        quick_help="16 pairs per intervention type, one-operation problems only (minutes)",
        models=DEFAULT_MODELS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce robustness --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce)


if __name__ == "__main__":
    raise SystemExit(main())
