"""`mechjax reproduce arithmetic-probes`: "Probing for Arithmetic Errors in Language Models"
(Sun, Stolfo, Sachan; EMNLP 2025) on SmolLM2-135M-Instruct and Gemma 3 270M.

    mechjax reproduce arithmetic-probes --out DIR [--quick] [--models smollm2-135m gemma3-270m]

Per model and per condition (`3-digit`: a, b in [100, 999], the paper's; `2-digit`: a, b in
[10, 99], where these small models are right more often), with results.json rewritten
after every stage (`"complete": false` until the end):

1. answers: `n` prompts `<3 worked examples> a + b = ` (the trailing space is the token
   the worked examples put before their answers, so the next token is the answer's first
   digit); the model's greedy answer (the first integer it writes) against a + b. Rows
   without a number, or with more digits than the gold sum can have, are left out and
   counted.
2. probes: `resid_post` of every layer at the last prompt token, harvested in one
   compiled pass per batch; one split for everything (train 60%, validation 20%, test 20%,
   stratified by correctness); a softmax probe per digit position for the model's answer
   and for the gold answer on every layer (`probes.digit_probes`, C chosen on
   validation), and a logistic probe of correctness. Per-layer test accuracies of the
   digit probes (mean over digit positions, and per position), and for the gold digits
   apart on the rows the model got wrong ("decodable whether or not the model is right").
3. error detectors, each at the layer its validation AUROC picks, measured on the test
   rows: (i) the digit comparison (`probes.disagreement`: the decoded answer differs from
   the decoded gold answer), (ii) the correctness probe. Accuracy, balanced accuracy,
   AUROC, the base rate of errors and the majority-class accuracy beside them.
4. chain of thought: two-step addition word problems (`mechjax.evals.worlds`, operands
   chosen so that both steps are additions of the condition's size), one worked example
   in a structured format (`Step 1: a + b = s`, `Step 2: s + c = t`, `Answer: t`), the
   model writing each step's result itself. The probes of stage 2, unchanged, read the
   hidden state before each step's result: detection metrics on the steps.
5. selective re-prompting: steps that detector (ii) flags are asked again as a bare
   `a + b = ` prompt (stage 1's format) and the new result replaces the old before the
   chain goes on; against no re-prompting and re-prompting every step: final-answer
   accuracy, step accuracy, steps re-prompted, errors fixed and correct steps disturbed.

Departures from the paper (report.md says them too): 135M/270M models (the paper's are
larger and mostly right on 3-digit addition; ours are mostly wrong, so the base rate of
errors is high and balanced accuracy and AUROC are the informative numbers); templated
word problems instead of GSM8K; re-prompting asks the step as a bare addition (the paper
re-generates the step in context).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
CONDITIONS = {"3-digit": (100, 999), "2-digit": (10, 99)}
N_SHOTS = 3
MIN_PER_CLASS = 10  # right and wrong answers each, to train and measure an error detector


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:  # seconds per model, for tests: numbers not meaningful
        return {
            "conditions": ["2-digit"],
            "n": 48,
            "n_cot": 8,
            "batch": 16,
            "cs": [0.1, 1.0],
            "steps": 20,
            "seed": 0,
        }
    return {
        "conditions": ["3-digit"] if quick else list(CONDITIONS),
        "n": 256 if quick else 512,
        "n_cot": 32 if quick else 48,
        "batch": 64,
        "cs": [0.1, 1.0],
        "steps": 100,
        "seed": 0,
    }


# ------------------------------------------------------------------------------ prompts


def _shots(lo: int, hi: int, seed: int) -> str:
    rng = np.random.default_rng(seed + 7919)
    return "".join(f"{a} + {b} = {a + b}\n" for a, b in rng.integers(lo, hi + 1, (N_SHOTS, 2)))


def addition_prompts(cond: str, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """`n` prompts of the condition and their operands `[n, 2]`, from `seed`."""
    lo, hi = CONDITIONS[cond]
    rng = np.random.default_rng(seed)
    ab = rng.integers(lo, hi + 1, (n, 2))
    shots = _shots(lo, hi, seed)
    return [f"{shots}{a} + {b} = " for a, b in ab], ab


def parse_answer(text: str) -> int:
    """The integer a completion starts with (spaces allowed before it), else -1."""
    m = re.match(r"\s*(\d+)", text)
    return int(m.group(1)) if m else -1


def _greedy_numbers(model, prompts: list[str], n_new: int, batch: int) -> tuple[np.ndarray, list]:
    """Greedy completions of `prompts`, `batch` rows per call, all calls sharing one
    compiled program (one prompt width, the last call padded with copies)."""
    import mechjax as mj

    tok = model.tokenizer
    width = max(len(tok.encode(p)) for p in prompts)
    texts: list[str] = []
    for s in range(0, len(prompts), batch):
        part = prompts[s : s + batch]
        padded = part + [part[-1]] * (batch - len(part))
        g = mj.generate(model, padded, n_new, stop_tokens=(), prompt_width=width)
        assert g.texts is not None
        texts += g.texts[: len(part)]
    return np.array([parse_answer(t) for t in texts]), texts


def _states(model, prompts: list[str], batch: int) -> np.ndarray:
    """`resid_post` of every layer at each prompt's last token: `[n_layers, n, d]`."""
    from mechjax import harvest, probes

    tok = model.tokenizer
    enc = tok.encode_batch(prompts, padding_side="right")
    sites = [harvest.block_site(model, l, "hook_resid_post") for l in range(model.config.n_layers)]
    acts = harvest.harvest(
        model, enc.tokens, sites, positions=enc.lengths - 1, batch_size=batch, progress=False
    )
    return probes.stack_layers(acts, sites).astype(np.float32)


def three_way_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / validation / test rows (60/20/20), stratified by `labels`."""
    from mechjax import probes

    rest, test = probes.split(labels.size, val_fraction=0.2, seed=seed, stratify=labels)
    tr, va = probes.split(rest.size, val_fraction=0.25, seed=seed + 1, stratify=labels[rest])
    return rest[tr], rest[va], test


# ------------------------------------------------------------------------------ stages


def _metrics(err: np.ndarray, flag: np.ndarray, score: np.ndarray) -> dict:
    from mechjax import probes

    base = float(err.mean())
    two = np.unique(err).size == 2
    return {
        "accuracy": probes.accuracy(err, flag),
        "balanced_accuracy": probes.balanced_accuracy(err, flag) if two else None,
        "auroc": probes.auroc(err, score) if two else None,
        "error_rate": base,
        "majority_accuracy": max(base, 1.0 - base),
        "n": int(err.size),
    }


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _best_layer(per_layer: list[float | None]) -> int:
    vals = [-1.0 if v is None else v for v in per_layer]
    return int(np.argmax(vals))


class Fitted:
    """The probes of one (model, condition) and how to apply them to new hidden states."""

    def __init__(self, pred, gold, correct, layer_ii: int, layer_i: int):
        self.pred, self.gold, self.correct = pred, gold, correct
        self.layer_ii, self.layer_i = layer_ii, layer_i

    def detect(self, acts: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`acts` `[n_layers, n, d]` -> detector name -> (error flag, error score)."""
        from mechjax import probes

        l2 = self.layer_ii
        p_ok = self.correct.proba(acts[l2], l2)[:, list(self.correct.classes).index(True)]
        s1, f1 = probes.disagreement(self.pred, self.gold, acts[self.layer_i], self.layer_i)
        return {"correctness_probe": (p_ok < 0.5, 1.0 - p_ok), "digit_comparison": (f1, s1)}


def _probe_stage(
    acts, gold, pred, n_digits: int, settings, detectors: bool = True
) -> tuple[dict, Fitted | None]:
    from mechjax import probes

    correct = pred == gold
    tr, va, te = three_way_split(correct, settings["seed"])
    kw = {"cs": settings["cs"], "steps": settings["steps"]}
    gold_p = probes.digit_probes(acts, gold, n_digits, indices=(tr, va), **kw)
    pred_p = probes.digit_probes(acts, pred, n_digits, indices=(tr, va), **kw)
    acc_pred = pred_p.accuracy(acts, pred, te)  # [L, n_digits]
    acc_gold = gold_p.accuracy(acts, gold, te)
    wrong_te = te[~correct[te]]
    acc_gold_wrong = gold_p.accuracy(acts, gold, wrong_te) if wrong_te.size else None
    acc_pred_wrong = pred_p.accuracy(acts, pred, wrong_te) if wrong_te.size else None
    r: dict = {
        "n_digits": n_digits,
        "split": {"train": int(tr.size), "val": int(va.size), "test": int(te.size)},
        "digit_accuracy_predicted": acc_pred.mean(axis=1).round(4).tolist(),
        "digit_accuracy_gold": acc_gold.mean(axis=1).round(4).tolist(),
        "digit_accuracy_predicted_per_position": acc_pred.round(4).tolist(),
        "digit_accuracy_gold_per_position": acc_gold.round(4).tolist(),
        "digit_accuracy_gold_on_wrong_rows": (
            None if acc_gold_wrong is None else acc_gold_wrong.mean(axis=1).round(4).tolist()
        ),
        "digit_accuracy_predicted_on_wrong_rows": (
            None if acc_pred_wrong is None else acc_pred_wrong.mean(axis=1).round(4).tolist()
        ),
        "n_test_wrong": int(wrong_te.size),
        "detectors": None,
    }
    if not detectors:
        return r, None
    err = ~correct
    # (ii) the correctness probe: layer by validation AUROC
    cp = probes.logistic(acts, correct, indices=(tr, va), **kw)
    l2 = _best_layer([float(v) for v in cp.val["auroc"]])
    # (i) the digit comparison: layer by validation AUROC of its score
    val_auroc = []
    for l in range(acts.shape[0]):
        s, _ = probes.disagreement(pred_p, gold_p, acts[l, va], l)
        val_auroc.append(probes.auroc(err[va], s) if np.unique(err[va]).size == 2 else None)
    l1 = _best_layer(val_auroc)
    fitted = Fitted(pred_p, gold_p, cp, l2, l1)
    det = fitted.detect(acts[:, te])
    r["detectors"] = {
        "correctness_probe": {
            "layer": l2,
            "val_auroc_per_layer": [round(float(v), 4) for v in cp.val["auroc"]],
            **_metrics(err[te], *det["correctness_probe"]),
        },
        "digit_comparison": {
            "layer": l1,
            "val_auroc_per_layer": [None if v is None else round(v, 4) for v in val_auroc],
            **_metrics(err[te], *det["digit_comparison"]),
        },
    }
    return r, fitted


def _cot_problems(cond: str, n: int, seed: int) -> list[dict]:
    """Two-step addition word problems whose two steps are additions of the condition's
    size: a + b with a, b in the lower half of the range, then (a + b) + c."""
    from mechjax.evals import worlds

    lo, hi = CONDITIONS[cond]
    rng = np.random.default_rng(seed + 31)
    out = []
    for i in range(n):
        p = worlds.generate(seed * 1_000_003 + i, n_steps=2, ops=("+", "+"), lo=lo, hi=hi)
        a, b = (int(v) for v in rng.integers(lo, (lo + hi) // 2 + 1, 2))
        c = int(rng.integers(lo, hi + 1))
        q = worlds.render(p.world.with_operands((a, b, c)), p.style)
        out.append({"text": q.text, "a": a, "b": b, "c": c, "answer": q.answer})
    return out


def _worked(p: dict) -> str:
    s = p["a"] + p["b"]
    return (
        f"Problem: {p['text']}\nStep 1: {p['a']} + {p['b']} = {s}\n"
        f"Step 2: {s} + {p['c']} = {s + p['c']}\nAnswer: {s + p['c']}\n\n"
    )


def _cot_stage(model, cond: str, fitted: Fitted, settings: dict, log) -> dict:
    n, seed, batch = settings["n_cot"], settings["seed"], settings["batch"]
    probs = _cot_problems(cond, n + 1, seed)
    shots, probs = _worked(probs[0]), probs[1:]
    n_new = len(str(CONDITIONS[cond][1] * 4)) + 1
    heads = [f"{shots}Problem: {p['text']}\nStep 1: " for p in probs]
    a = np.array([p["a"] for p in probs])
    b = np.array([p["b"] for p in probs])
    c = np.array([p["c"] for p in probs])
    lo, hi = CONDITIONS[cond]
    bare = lambda x, y: [  # noqa: E731  stage 1's prompt format, the shots of its range
        f"{_shots(lo, hi, seed)}{u} + {v} = " for u, v in zip(x, y)
    ]

    # step 1 (shared by every chain)
    p1 = [f"{h}{x} + {y} = " for h, x, y in zip(heads, a, b)]
    r1, _ = _greedy_numbers(model, p1, n_new, batch)
    acts1 = _states(model, p1, batch)
    det1 = fitted.detect(acts1)
    flag1 = det1["correctness_probe"][0]
    re1, _ = _greedy_numbers(model, bare(a, b), n_new, batch)  # every step 1, asked bare
    chains = {"none": r1, "selective": np.where(flag1, re1, r1), "all": re1}

    # step 2 of each chain (one call), and the states of the chain without re-prompting
    p2 = {
        k: [f"{h}{x} + {y} = {s}\nStep 2: {s} + {z} = " for h, x, y, s, z in zip(heads, a, b, v, c)]
        for k, v in chains.items()
    }
    r2_all, _ = _greedy_numbers(model, p2["none"] + p2["selective"] + p2["all"], n_new, batch)
    r2 = dict(zip(chains, np.split(r2_all, 3)))
    acts2 = _states(model, p2["none"] + p2["selective"], batch)
    det2_none = fitted.detect(acts2[:, :n])
    det2_sel = fitted.detect(acts2[:, n:])
    flag2 = det2_sel["correctness_probe"][0]
    re2, _ = _greedy_numbers(model, bare(chains["selective"], c), n_new, batch)
    re2_all, _ = _greedy_numbers(model, bare(chains["all"], c), n_new, batch)
    final = {
        "none": r2["none"],
        "selective": np.where(flag2, re2, r2["selective"]),
        "all": re2_all,
    }

    # transfer: the steps of the chain without re-prompting
    err = np.concatenate([r1 != a + b, r2["none"] != r1 + c])
    out: dict = {"n_problems": n, "n_steps": int(err.size), "step_error_rate": float(err.mean())}
    out["transfer"] = {
        k: _metrics(
            err,
            np.concatenate([det1[k][0], det2_none[k][0]]),
            np.concatenate([det1[k][1], det2_none[k][1]]),
        )
        for k in det1
    }
    gold_final = a + b + c
    step1_ok = {"none": r1 == a + b, "selective": chains["selective"] == a + b, "all": re1 == a + b}
    step2_ok = {
        "none": r2["none"] == r1 + c,
        "selective": final["selective"] == chains["selective"] + c,
        "all": final["all"] == chains["all"] + c,
    }
    ok1_orig, ok2_orig = r1 == a + b, r2["selective"] == chains["selective"] + c
    out["reprompt"] = {
        k: {
            "final_accuracy": float((final[k] == gold_final).mean()),
            "step_accuracy": float(np.concatenate([step1_ok[k], step2_ok[k]]).mean()),
        }
        for k in final
    }
    out["reprompt"]["selective"].update(
        {
            "steps_reprompted": int(flag1.sum() + flag2.sum()),
            "correct_steps_reprompted": int((flag1 & ok1_orig).sum() + (flag2 & ok2_orig).sum()),
            "correct_steps_disturbed": int(
                (flag1 & ok1_orig & (re1 != a + b)).sum()
                + (flag2 & ok2_orig & (re2 != chains["selective"] + c)).sum()
            ),
            "errors_fixed": int(
                (flag1 & ~ok1_orig & (re1 == a + b)).sum()
                + (flag2 & ~ok2_orig & (re2 == chains["selective"] + c)).sum()
            ),
        }
    )
    out["examples"] = [
        {
            "prompt_tail": p1[i][len(shots) :] + str(r1[i]),
            "gold": int(gold_final[i]),
            "final": {k: int(final[k][i]) for k in final},
        }
        for i in range(min(3, n))
    ]
    rp = out["reprompt"]
    log(
        f"    CoT: step error rate {out['step_error_rate']:.2f}; final accuracy none "
        f"{rp['none']['final_accuracy']:.2f}, selective {rp['selective']['final_accuracy']:.2f}, "
        f"all {rp['all']['final_accuracy']:.2f}"
    )
    return out


def _condition(stages, model, name: str, cond: str, settings: dict, log) -> dict:
    n, seed, batch = settings["n"], settings["seed"], settings["batch"]
    r: dict = {}
    with stages.stage(f"{name} {cond}: answers"):
        prompts, ab = addition_prompts(cond, n, seed)
        gold = ab.sum(axis=1)
        n_new = len(str(int(gold.max()))) + 1
        pred, texts = _greedy_numbers(model, prompts, n_new, batch)
        n_digits = len(str(2 * CONDITIONS[cond][1]))  # the most a gold sum can have
        keep = (pred >= 0) & (pred < 10**n_digits)
        acts = _states(model, [p for p, k in zip(prompts, keep) if k], batch)
    r["answers"] = {
        "n_prompts": n,
        "n_kept": int(keep.sum()),
        "n_no_number": int((pred < 0).sum()),
        "n_too_many_digits": int((pred >= 10**n_digits).sum()),
        "model_accuracy": float((pred[keep] == gold[keep]).mean()),
        "model_accuracy_all_prompts": float((pred == gold).sum() / n),
        "examples": [{"prompt_tail": prompts[i][-16:], "completion": texts[i]} for i in range(3)],
    }
    gold, pred = gold[keep], pred[keep]
    log(
        f"  {name} {cond}: {r['answers']['n_kept']}/{n} answers kept, model accuracy "
        f"{r['answers']['model_accuracy']:.3f}"
    )
    n_right = int((pred == gold).sum())
    few = min(n_right, gold.size - n_right) < MIN_PER_CLASS
    if few:
        r["skipped"] = (
            f"{n_right} right and {gold.size - n_right} wrong answers: fewer than "
            f"{MIN_PER_CLASS} of one kind, so no error detector is trained or measured (digit "
            "probes only) and the chain of thought is not run"
        )
        log(f"  {name} {cond}: {r['skipped']}")
    if np.unique(pred).size < 2:
        r["probes"] = None
        return r
    with stages.stage(f"{name} {cond}: probes"):
        r["probes"], fitted = _probe_stage(acts, gold, pred, n_digits, settings, not few)
    if fitted is None:
        return r
    d = r["probes"]["detectors"]
    log(
        f"  {name} {cond}: correctness probe layer {d['correctness_probe']['layer']} test "
        f"acc {d['correctness_probe']['accuracy']:.3f} AUROC "
        f"{_fmt(d['correctness_probe']['auroc'])}; digit comparison AUROC "
        f"{_fmt(d['digit_comparison']['auroc'])}"
    )
    with stages.stage(f"{name} {cond}: chain of thought"):
        r["cot"] = _cot_stage(model, cond, fitted, settings, log)
    return r


def results_table(details: dict, models) -> dict:
    """The issue's results.json layout, from the paper's 3-digit condition where it ran
    (else the first condition run)."""
    out = {}
    for name in models:
        conds = details.get(name, {})
        cond = "3-digit" if "3-digit" in conds else next(iter(conds), None)
        r = conds.get(cond) if cond else None
        if not r or not r.get("probes") or not r["probes"].get("detectors"):
            out[name] = {"condition": cond, "error": (r or {}).get("skipped", "not run")}
            if r and r.get("probes"):
                out[name]["digit_accuracy_predicted"] = r["probes"]["digit_accuracy_predicted"]
                out[name]["digit_accuracy_gold"] = r["probes"]["digit_accuracy_gold"]
            continue
        pr, det = r["probes"], r["probes"]["detectors"]["correctness_probe"]
        out[name] = {
            "condition": cond,
            "best_layer": det["layer"],
            "error_detection_accuracy": det["accuracy"],
            "error_detection_auroc": det["auroc"],
            "error_detection_balanced_accuracy": det["balanced_accuracy"],
            "error_rate": det["error_rate"],
            "digit_accuracy_predicted": pr["digit_accuracy_predicted"],
            "digit_accuracy_gold": pr["digit_accuracy_gold"],
        }
    return out


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    conditions: Sequence[str] | None = None,
    log=print,
) -> dict:
    """Run every stage for every model and condition; write results.json (the issue's
    table), details.json (everything) and report.md with its figures. `conditions`: a
    subset of `CONDITIONS` to run (default: the settings')."""
    import mechjax as mj
    from mechjax.analyses.arithmetic_probes.report import write_report
    from mechjax.analyses.stages import Stages, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke}
    if conditions:
        bad = sorted(set(conditions) - set(CONDITIONS))
        if bad:
            raise ValueError(f"unknown conditions {bad}; valid: {', '.join(CONDITIONS)}")
        settings["conditions"] = list(conditions)
    t0 = time.time()
    details: dict = {}
    meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
    n_stages = 3 * len(settings["conditions"]) * len(models)
    with Stages(out / "details.json", n_stages, progress=progress, log=log) as stages:
        stages.save(meta)
        for name in models:
            model = mj.load(name)
            details[name] = {}
            for cond in settings["conditions"]:
                details[name][cond] = _condition(stages, model, name, cond, settings, log)
                stages.save({name: details[name]})
        meta["seconds"] = round(time.time() - t0, 1)
        final = stages.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details, models), "complete": True})
    write_report(out, details, meta)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "arithmetic-probes",
        "Reproduce 'Probing for Arithmetic Errors in Language Models'.",
        quick_help="the 3-digit condition, 256 prompts, 32 word problems (minutes)",
        models=DEFAULT_MODELS,
    )
    ap.add_argument(
        "--conditions",
        nargs="+",
        choices=list(CONDITIONS),
        default=None,
        help="operand sizes to run (default: both; --quick: 3-digit)",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce arithmetic-probes --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce, conditions="conditions")


if __name__ == "__main__":
    raise SystemExit(main())
