"""`mechjax reproduce cognitive-biases`: "Do Language Models Exhibit the Same Cognitive
Biases in Problem Solving as Human Learners?" (Opedal, Stolfo et al., ICML 2024) on
SmolLM2-135M-Instruct and Gemma 3 270M, and a digit-level transformer trained here.

    mechjax reproduce cognitive-biases --out DIR [--quick] [--models smollm2-135m gemma3-270m]

Three paired tests (`mechjax.evals.biases`; both problems of a pair have the same gold
answer, condition a is the one children find easier):

- `consistency` (text comprehension): the comparison sentence is consistent ("B has 3
  times as many apples as A") or inconsistent ("A has 1/3 the amount of apples as B");
- `transfer_comparison` (solution planning): the same arithmetic as transfers or as
  comparisons;
- `carry` (execution): 3-digit additions and subtractions with the same result, without
  carries/borrows or with one or two.

Stages, with details.json rewritten after each (`"complete": false` until the end):

1. direct, per model: `Q: {problem}\\nA: The answer (arabic numerals) is `, greedy, 16
   new tokens; the first number in the continuation is the answer (none: wrong, counted
   as unparsed). Accuracy per condition, the paired t-test (the paper's test) and
   McNemar's exact test.
2. chain of thought, per model, on a subset of the pairs: Kojima et al.'s two stages
   ("Let's think step by step.", then "Therefore, the answer (arabic numerals) is ").
3. the theory hook: a 2-layer digit-level transformer trained with `mechjax.training` on
   3-digit additions and subtractions (`digit_model`), tested on carry pairs built the same
   way, with its accuracy per condition over training.

Departures from the paper (report.md says them too): template-rendered problems from the
project's own MathWorld-style generator (no LLM paraphrase step offline; the paper's CSVs
are not redistributable); one-operation consistency and transfer/comparison problems
(two-operation items are at the floor for models this size); 135M/270M models instead of
LLaMA 2, Mistral and GPT-3.5/4 sized ones.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
TESTS = ("consistency", "transfer_comparison", "carry")


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:  # seconds per model, for tests: numbers not meaningful
        return {"n": 4, "n_cot": 2, "batch": 4, "max_new": 6, "digit_model": "smoke"}
    return {
        "n": 48 if quick else 150,
        "n_cot": 12 if quick else 24,
        "batch": 32,
        "max_new": 16,
        "digit_model": "quick" if quick else "full",
    }


def make_pairs(test: str, n: int, seed: int) -> list:
    """The pairs of one test; consistency and transfer/comparison with one operation."""
    from mechjax.evals.biases import make_pairs as pairs

    if test == "carry":
        return pairs(test, n, seed)
    return pairs(test, n, seed, n_steps=1)


def _summary(r: dict) -> dict:
    keep = ("acc_a", "acc_b", "p_value", "p_mcnemar", "n", "n_unparsed_a", "n_unparsed_b")
    out = {k: r[k] for k in keep}
    items = r["items"]
    out["both_right"] = sum(i["correct_a"] and i["correct_b"] for i in items)
    out["only_a"] = sum(i["correct_a"] and not i["correct_b"] for i in items)
    out["only_b"] = sum(i["correct_b"] and not i["correct_a"] for i in items)
    return out


def _examples(pairs, r: dict, k: int = 3) -> list[dict]:
    return [{"a": p.a.text, "b": p.b.text, **item} for p, item in zip(pairs[:k], r["items"][:k])]


def _evaluate(model, pairs, mode: str, settings: dict) -> dict:
    from mechjax.evals.bias_eval import evaluate_pairs

    r = evaluate_pairs(
        model,
        pairs,
        mode=mode,
        max_new_tokens=settings["max_new"],
        batch_size=settings["batch"],
    )
    out = _summary(r)
    out["examples"] = _examples(pairs, r)
    if pairs and pairs[0].test == "carry":  # per number of carries
        for k in sorted({p.info["n_carries"] for p in pairs}):
            sel = [i for i, p in enumerate(pairs) if p.info["n_carries"] == k]
            a = [r["items"][i]["correct_a"] for i in sel]
            b = [r["items"][i]["correct_b"] for i in sel]
            out[f"carries_{k}"] = {"acc_a": sum(a) / len(a), "acc_b": sum(b) / len(b), "n": len(a)}
    return out


def _row(r: dict) -> dict:
    """acc_a, acc_b, p_value, n; p_value null (not NaN, which JSON lacks) when the two
    conditions have identical outcomes and no test is defined."""
    out = {k: r[k] for k in ("acc_a", "acc_b", "p_value", "n")}
    if out["p_value"] != out["p_value"]:
        out["p_value"] = None
    return out


def results_table(details: dict, models) -> dict:
    """The issue's layout: model -> test -> {"acc_a", "acc_b", "p_value", "n"} (direct
    prompting; chain of thought under "cot"), and the digit-level transformer's carry test."""
    out: dict = {}
    for name in models:
        d = details.get(name)
        if not d or "direct" not in d:
            out[name] = {"error": "not run"}
            continue
        out[name] = {}
        for test in TESTS:
            r = d["direct"][test]
            out[name][test] = _row(r)
            c = d.get("cot", {}).get(test)
            if c:
                out[name][test]["cot"] = _row(c)
    dm = details.get("digit_transformer")
    if dm:
        out["digit_transformer"] = {"carry": _row(dm)}
    return out


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    digit_model: bool = True,
    log=print,
) -> dict:
    """Every stage for every model, then the digit-level transformer; details.json,
    results.json and report.md with its figures."""
    import mechjax as mj
    from mechjax.analyses.cognitive_biases.report import write_report
    from mechjax.analyses.stages import Stages, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke, "seed": 0}
    t0 = time.time()
    details: dict = {}
    meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
    pairs = {t: make_pairs(t, settings["n"], settings["seed"] + k) for k, t in enumerate(TESTS)}
    n_stages = 2 * len(models) + int(digit_model)
    with Stages(out / "details.json", n_stages, progress=progress, log=log) as st:
        st.save(meta)
        for name in models:
            model = mj.load(name)
            details[name] = {"direct": {}, "cot": {}}
            for mode, n in (("direct", settings["n"]), ("cot", settings["n_cot"])):
                with st.stage(f"{name}: {mode}"):
                    for test in TESTS:
                        r = _evaluate(model, pairs[test][:n], mode, settings)
                        details[name][mode][test] = r
                        st.log(
                            f"{name} {mode} {test}: acc_a {r['acc_a']:.3f}, acc_b "
                            f"{r['acc_b']:.3f}, p {r['p_value']:.3g} (n {r['n']})"
                        )
                        st.save({name: details[name]})
        if digit_model:
            from mechjax.analyses.cognitive_biases import digit_model as dm

            with st.stage("digit-level transformer"):
                # the carry pairs of the language models' test (same generator and seed)
                seed = settings["seed"] + TESTS.index("carry")
                dm_settings = {**dm.SETTINGS[settings["digit_model"]], "pairs_seed": seed}
                details["digit_transformer"] = dm.run(dm_settings, log=st.log)
            st.save({"digit_transformer": details["digit_transformer"]})
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details, models), "complete": True})
    write_report(out, details, meta)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "cognitive-biases",
        "Reproduce 'Do Language Models Exhibit the Same Cognitive Biases in Problem Solving "
        "as Human Learners?'.",
        quick_help="48 pairs per test (12 with chain of thought), a shorter digit-model run",
        models=DEFAULT_MODELS,
    )
    ap.add_argument(
        "--no-digit-model", action="store_true", help="skip the digit-level transformer"
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce cognitive-biases --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(
        argv, build_parser(), reproduce, digit_model=lambda a: not a.no_digit_model
    )


if __name__ == "__main__":
    raise SystemExit(main())
