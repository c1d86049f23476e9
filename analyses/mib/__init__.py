"""Reproduction: MIB's circuit-localization track (Mueller et al. 2025, "MIB: A
Mechanistic Interpretability Benchmark", ICML 2025), Table 2 (CPR and CMD per method,
task and model) and the InterpBench AUROC column.

The track ranks the edges of a model's graph (every head's q/k/v input, every MLP and the
logits as destinations) with a circuit-discovery method, keeps the top `int(k * n_edges)`
edges at k in {0.1%, ..., 100%}, ablates every other edge with the counterfactual prompt's
activations and measures faithfulness f = (m(C) - m(empty)) / (m(full) - m(empty)) with
m the logit difference. CPR (area under f, signed ranking; higher is better) and CMD (area
under |1 - f|, absolute ranking; lower is better) summarise the curve. The paper's claims
checked here: a random ranking gives CPR ~ 0.25 and CMD ~ 0.75; attribution patching with
integrated gradients (EAP-IG) and mask optimisation are the best methods; information
flow routes (no counterfactual) are weaker. Paper values (EAP-IG-inputs CPR): IOI on GPT-2
1.85, Qwen 1.63, Gemma 2 3.20, Llama 2.08; arithmetic on Llama 0.99; random 0.25-0.32.

What runs: SmolLM2-135M and Gemma 3 270M (the offline models) on IOI (`s2_io_flip`
counterfactual) and two-operand addition (a random counterfactual), with EAP, EAP-IG
(inputs, 5 steps), EAP-IG (activations), clean-corrupted, information flow routes (greedy
construction), learned edge masks (hard concrete, trained for every fraction's target as
one vmapped program) and a random ranking. Scores come from the attribution pairs,
faithfulness from other pairs of the same generator (MIB's train/validation split). Then
the ground-truth model (`groundtruth.py`): each method's AUROC against a known induction
circuit.

Fidelity: MIB's models (GPT-2, Qwen2.5, Gemma 2, Llama 3.1), its HF datasets and
InterpBench are not offline. The tasks are regenerated (`mechjax.tasks`), with far fewer
pairs than MIB's (see the report's settings), on two smaller models; InterpBench is
replaced by a self-trained induction model whose circuit is read from its attention
patterns. Everything else (graph, scores, pruning, fractions, normalisation, CPR/CMD
from signed/absolute rankings) follows MIB's code.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
TASKS = ("ioi", "arithmetic")
METHODS = (
    "random",
    "eap",
    "eap_ig_inputs",
    "eap_ig_activations",
    "clean_corrupted",
    "ifr",
    "masks",
)


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:
        # the contract and the three kinds of method (a ranking, greedy construction from
        # the logits, one mask per fraction); every scoring function has its own tests
        three = ["random", "ifr", "masks"]
        return {"n_attr": 4, "n_eval": 4, "batch": 4, "ig_steps": 2, "act_steps": 1,
                "mask_steps": 3, "mask_batch": 4, "gt": "smoke", "tasks": ["ioi"],
                "methods": three, "gt_methods": three}  # fmt: skip
    if quick:
        return {"n_attr": 8, "n_eval": 8, "batch": 8, "ig_steps": 5, "act_steps": 1,
                "mask_steps": 10, "mask_batch": 4, "gt": "quick", "tasks": ["ioi"],
                "methods": [m for m in METHODS if m != "eap_ig_activations"]}  # fmt: skip
    # sized for a 2-core machine (see the report); EAP-IG over activations costs steps x
    # (1 + 2 n_layers) gradient passes (305 on SmolLM2 at MIB's 5 steps), as EAP-IG's own
    return {"n_attr": 8, "n_eval": 8, "batch": 8, "ig_steps": 5, "act_steps": 5,
            "mask_steps": 8, "mask_batch": 4, "gt": "full", "tasks": list(TASKS),
            "methods": list(METHODS)}  # fmt: skip


# the settings that change one method's result only; a resumed run may change one if it
# keeps no result of that method (each method's scores and curve depend on nothing else)
METHOD_SETTINGS = {"ig_steps": "eap_ig_inputs", "act_steps": "eap_ig_activations",
                   "mask_steps": "masks", "mask_batch": "masks"}  # fmt: skip


def resume_free(prior: dict) -> tuple[str, ...]:
    """Settings a resumed run may change against `prior` (an earlier details.json): the
    models and the methods list (each kept result is checked by name), and the settings of
    a method the earlier run has no result of."""
    done = {m for name, rows in prior.items() if isinstance(rows, dict)
            for t in TASKS if isinstance(rows.get(t), dict) for m in rows[t]}  # fmt: skip
    return ("models", "methods") + tuple(k for k, m in METHOD_SETTINGS.items() if m not in done)


def task_pairs(model, task: str, n: int, seed: int):
    """MIB's task pairs, regenerated: IOI with s2_io_flip, addition with a random
    counterfactual (other operands, another result)."""
    from mechjax import tasks

    if task == "ioi":
        return tasks.ioi(model.tokenizer, n=n, seed=seed, counterfactual="s2_io_flip")
    if task == "arithmetic":
        return tasks.arithmetic(model.tokenizer, n=n, seed=seed, op="+", intervention="result")
    raise ValueError(f"task {task!r}; valid: {TASKS}")


def method_scores(model, method: str, attr, s: dict):
    """Edge scores of one method on the attribution pairs: [n_src, n_dst], or one map per
    MIB fraction for the masks; and the construction MIB evaluates them with."""
    import jax.numpy as jnp

    from mechjax import circuits, metrics
    from mechjax.circuits import masks as M

    c, k = jnp.asarray(attr.clean), jnp.asarray(attr.corrupted)
    loss = metrics.Negate(attr.logit_diff())  # EAP-IG's loss=True logit difference
    bs = s["batch"]
    if method == "random":
        g = circuits.graph_of(model)
        return np.random.RandomState(0).randn(*g.valid.shape) * g.valid, "topn"
    if method == "eap":
        return circuits.eap(model, c, k, loss, batch_size=bs)[0], "topn"
    if method == "eap_ig_inputs":
        return circuits.eap_ig(model, c, k, loss, steps=s["ig_steps"], batch_size=bs,
                               chunk_size=1)[0], "topn"  # fmt: skip
    if method == "eap_ig_activations":
        return circuits.eap_ig(model, c, k, loss, steps=s["act_steps"], variant="activations",
                               batch_size=bs, chunk_size=1)[0], "topn"  # fmt: skip
    if method == "clean_corrupted":
        return circuits.clean_corrupted(model, c, k, loss, batch_size=bs)[0], "topn"
    if method == "ifr":
        return circuits.information_flow_routes(model, c, batch_size=bs)[0], "greedy"
    if method == "masks":
        cfg = M.MaskConfig(steps=s["mask_steps"], batch_size=s["mask_batch"])
        res = M.train_masks(model, c, k, circuits.MIB_FRACTIONS, config=cfg)
        return np.asarray(M.keep_probability(res.log_alpha, cfg)), "topn"
    raise ValueError(f"method {method!r}; valid: {METHODS}")


def run_task(model, task: str, s: dict, st, name: str, prior: dict | None = None) -> dict:
    """Every method on one task: CPR, CMD, the f curves, seconds. `prior`: this task's row
    of an earlier run with the same settings (`--resume`); a method it holds is kept."""
    import jax.numpy as jnp

    from mechjax import circuits

    prior = prior or {}
    attr = task_pairs(model, task, s["n_attr"], seed=0)
    ev = task_pairs(model, task, s["n_eval"], seed=1)
    c, k = jnp.asarray(ev.clean), jnp.asarray(ev.corrupted)
    graph = circuits.graph_of(model)
    row: dict = {"n_edges": graph.n_edges, "n_attr": len(attr), "n_eval": len(ev),
                 "prompt_tokens": int(ev.clean.shape[1]), "example": ev.clean_text[0],
                 **task_accuracy(model, ev)}  # fmt: skip
    for m in s["methods"]:
        if m in prior:  # resumed: the earlier run's result for this method
            row[m] = prior[m]
            st.log(f"  {task} {m}: kept from the earlier run")
            continue
        with st.stage(f"{name}: {task}: {m}"):
            t0 = time.perf_counter()
            scores, construction = method_scores(model, m, attr, s)
            scores = np.asarray(scores)  # waits for the scores: JAX dispatches async
            t1 = time.perf_counter()
            r = circuits.faithfulness(model, c, k, ev.logit_diff(), scores, graph,
                                      construction=construction)  # fmt: skip
            r.update(attribution_seconds=round(t1 - t0, 1),
                     evaluation_seconds=round(time.perf_counter() - t1, 1))  # fmt: skip
        row[m] = r
        st.log(f"  {task} {m}: CPR {r['cpr']:.3f}  CMD {r['cmd']:.3f}  "
               f"(m full {r['full']:.2f}, empty {r['empty']:.2f})")  # fmt: skip
        st.save({name: {**st_partial(st, name), task: row}})
    return row


def task_accuracy(model, batch) -> dict:
    """How the model does the task on the evaluation pairs: the answer's top-1 rate and
    the rate at which it beats the wrong answer on the clean prompts, and the metric's
    clean-minus-counterfactual gap per pair (mean and standard error). f divides by that
    gap (the empty circuit is the counterfactual run), so a gap within the noise of the
    pairs makes every f noise; the report flags such a row and names a low top-1 rate."""
    import jax.numpy as jnp

    import mechjax as mj
    from mechjax import metrics

    def per_pair(tokens):
        logits = mj.run(model, jnp.asarray(tokens)).logits
        return logits[:, -1], np.asarray(
            metrics.logit_diff(logits, batch.answers, batch.wrongs, mean=False), np.float64
        )

    last, clean = per_pair(batch.clean)
    _, counter = per_pair(batch.corrupted)
    gap = clean - counter
    top = np.asarray(jnp.argmax(last, -1))
    return {"clean_top1": float(np.mean(top == np.asarray(batch.answers))),
            "clean_prefers_answer": float(np.mean(clean > 0)),
            "gap": float(gap.mean()),
            "gap_se": float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else 0.0}  # fmt: skip


def st_partial(st, name: str) -> dict:
    return dict(st._partial.get(name, {}))


def results_table(details: dict, models) -> dict:
    """results.json: {"<task>_<model>": {"<method>": {"cpr", "cmd"}}, "auroc": {...}}.

    The task keys name the model as MIB's columns do (`ioi_gpt2`, `arithmetic_llama3`).
    """
    out: dict = {}
    for m in models:
        for task in TASKS:
            row = details.get(m, {}).get(task)
            if not row:
                continue
            out[f"{task}_{m}"] = {
                meth: ({"cpr": row[meth]["cpr"], "cmd": row[meth]["cmd"]} if meth in row else None)
                for meth in METHODS
            }
    gt = details.get("groundtruth", {})
    out["auroc"] = {meth: v["auroc"] for meth, v in gt.get("auroc", {}).items()}
    return out


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    resume: bool = False,
    log=print,
) -> dict:
    """Every model and task, then the ground-truth model; details.json, results.json,
    report.md and figures.

    `resume`: keep what an earlier run with the same settings left in
    `out_dir/details.json` (the ground truth, each finished method of each model and
    task) and run the rest; details.json lists the kept stages under "resumed"."""
    import mechjax as mj
    from mechjax.analyses.mib import groundtruth
    from mechjax.analyses.mib.report import write_report
    from mechjax.analyses.stages import Stages, prior_details, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = {**_settings(quick, smoke), "smoke": smoke}
    if quick and not smoke:
        models = list(models)[:1]
    t0 = time.time()
    meta: dict = {"settings": {**s, "quick": quick, "models": list(models)}}
    details: dict = {}
    prior = prior_details(out / "details.json", meta["settings"], resume_free) if resume else {}
    kept = _kept_stages(prior, models, s)
    if kept:
        meta["resumed"] = kept
        if prior.get("note"):  # what the earlier run's own note says about its stages
            meta["earlier_note"] = prior["note"]
        # the earlier stages' seconds count in the total
        t0 -= sum(v.get("seconds", 0) for v in prior.get("stage_seconds", {}).values())
    n_stages = 1 + len(models) * len(s["tasks"]) * len(s["methods"]) - len(kept)
    with Stages(out / "details.json", n_stages, progress=progress, log=log) as st:
        st.timings.update({k: v for k, v in prior.get("stage_seconds", {}).items() if k in kept})
        st.save(meta)
        if "groundtruth" in prior:
            details["groundtruth"] = prior["groundtruth"]
            st.log("ground truth: kept from the earlier run")
        else:
            with st.stage("ground truth"):
                gs = groundtruth.SETTINGS[s["gt"]]
                gm = s.get("gt_methods", METHODS)  # EAP-IG activations too: cheap here
                details["groundtruth"] = groundtruth.run(gs, gm, log=st.log)
        st.save({"groundtruth": details["groundtruth"]})
        # the kept results go to details.json now, so a resumed run that stops early
        # never loses what the earlier one finished
        for name in models:
            rows = {t: prior[name][t] for t in s["tasks"] if t in prior.get(name, {})}
            if rows:
                st.save({name: rows})
        for name in models:
            model = mj.load(name)
            details[name] = {}
            for task in s["tasks"]:
                before = prior.get(name, {}).get(task)
                details[name][task] = run_task(model, task, s, st, name, before)
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details, models), "complete": True})
    write_report(out, details, meta)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def _kept_stages(prior: dict, models, s: dict) -> list[str]:
    """The stages an earlier run finished that a resumed run keeps, named as its
    stage_seconds names them."""
    kept = ["ground truth"] if "groundtruth" in prior else []
    for name in models:
        for task in s["tasks"]:
            row = prior.get(name, {}).get(task, {})
            kept += [f"{name}: {task}: {m}" for m in s["methods"] if m in row]
    return kept


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "mib",
        "Reproduce MIB's circuit track: CPR/CMD of EAP, EAP-IG, clean-corrupted, IFR, learned "
        "masks and random on IOI and addition; AUROC against a known induction circuit.",
        quick_help="SmolLM2 on IOI only, 8 pairs, no EAP-IG activations, 10 mask steps",
        models=DEFAULT_MODELS,
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep what an earlier run with the same settings left in OUT and run the rest",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce mib --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce, resume="resume")


if __name__ == "__main__":
    raise SystemExit(main())
