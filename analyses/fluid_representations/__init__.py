"""Reproduction (offline analogue): "Fluid Representations in Reasoning Models"
(Kharlapenko, Stolfo, Conmy, Sachan, Jin; arXiv 2602.04843; paper 5 of the reference list).

The paper has QwQ-32B solve Mystery Blocksworld (PlanBench's Blocksworld with the action
and predicate names replaced by unrelated words) and reads, over its long chains of
thought, the hidden states at the occurrences of each obfuscated action and predicate.
Claims: (1) a concept's representation converges as reasoning goes on (in-naming);
(2) representations of the same concept under different names become similar
(cross-naming: structure over surface); (3) injecting refined representations from late
positions into early ones raises accuracy; (4) obfuscated representations can be replaced
by those of standard names with little loss.

What runs here (`sequences.py`, `measures.py`; the domain is `mechjax.tasks.blocksworld`):
long in-context traces of random Blocksworld walks over four blocks (a state, the next
state, then the action that did it), the same walks under the standard PDDL names,
PlanBench's Mystery names and random unrelated words. At each "Action:" the model names the
action; its first token is scored against the four verbs (four-way accuracy) and against
the one other verb the hand allows (two-way accuracy: the part that needs what the verbs
do). One harvest per model gives the scores and the residual stream after three layers at
every verb and predicate word; per concept and context bin these are averaged (centred by
the mean over concepts, which removes what every concept shares at that point). In-naming:
cosine of a concept's vector between consecutive bins; cross-naming: same-concept against
different-concept cosine between two namings. Interventions, at the middle of the three
layers, overwrite the residual stream at the verb words: the first `early` steps with the
same naming's late-context vector of the right concept (and controls: the wrong concept,
the early-context vector), and the whole trace with the standard naming's vector of the
right (or wrong) concept; accuracy changes are paired over traces with bootstrap intervals.

Fidelity: low. QwQ-32B's self-generated reasoning is replaced by given demonstrations to
models of 135M and 270M parameters; the paper's 300 four-block puzzles and 15 namings by
a handful of random walks and namings; its injection and replacement details are not
public (unverified in the reference notes), so the interventions here are one reading of
them. Expected, if the mechanism carries over: rising in-naming similarity, a positive and
rising cross-naming gap, accuracy up with late-context injection, and little loss with
standard-name replacement against a clear loss with the wrong concept.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
LAYER_FRACTIONS = (0.25, 0.5, 0.75)


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:
        return {"walks": 2, "steps": 6, "n_random": 1, "bins": 2, "early": 3, "seed": 0,
                "batch": 2, "bootstrap": 200}  # fmt: skip
    if quick:
        return {"walks": 4, "steps": 12, "n_random": 1, "bins": 3, "early": 6, "seed": 0,
                "batch": 4, "bootstrap": 2000}  # fmt: skip
    return {"walks": 12, "steps": 20, "n_random": 2, "bins": 4, "early": 8, "seed": 0,
            "batch": 4, "bootstrap": 2000}  # fmt: skip


def layers_of(n_layers: int) -> list[int]:
    return sorted({int(round(f * (n_layers - 1))) for f in LAYER_FRACTIONS})


def _late(rep: np.ndarray, li: int, concept: int, early: bool = False) -> np.ndarray:
    """A concept's vector in its last (or first) context bin that has occurrences."""
    bins = rep[li, concept]
    ok = np.flatnonzero(~np.isnan(bins[:, 0]))
    return bins[ok[0] if early else ok[-1]]


def _majority(answers: np.ndarray) -> float:
    """Two-way accuracy of always naming the more frequent verb of each hand pair."""
    from mechjax.analyses.fluid_representations.measures import PARTNER

    counts = np.bincount(answers.reshape(-1), minlength=4)
    return float(sum(max(counts[a], counts[PARTNER[a]]) for a in (0, 1)) / counts.sum())


def run_model(model, namings, walks, settings: dict, st, name: str) -> dict:
    """Accuracy, representations, similarities and interventions for one model."""
    from mechjax.analyses.fluid_representations import measures as M
    from mechjax.analyses.fluid_representations import sequences as S

    tok = model.tokenizer
    layers = layers_of(model.config.n_layers)
    steps, n_bins = settings["steps"], settings["bins"]
    out: dict = {"layers": layers, "intervention_layer": layers[len(layers) // 2], "namings": {}}
    traces, runs, reps = {}, {}, {}
    with st.stage(f"{name}: harvest"):
        for n in namings:
            cands = S.verb_candidates(n, tok)
            traces[n.name] = [S.tokenize(w, n, tok) for w in walks]
            runs[n.name] = M.harvest_traces(model, traces[n.name], layers, cands, settings["batch"])
            reps[n.name] = M.representations(runs[n.name], traces[n.name], n_bins, steps)
            sc = np.stack([r["scores"] for r in runs[n.name]])
            answers = np.stack([t.answer for t in traces[n.name]])
            four, two = M.accuracy(sc, answers)
            marg = M.margin(sc, answers)
            bins = M.step_bins(steps, n_bins)[:steps]
            out["namings"][n.name] = {
                "words": n.words,
                "tokens": int(np.mean([len(t.tokens) for t in traces[n.name]])),
                "four_way": float(four.mean()),
                "two_way": float(two.mean()),
                "four_way_by_bin": [float(four[:, bins == b].mean()) for b in range(n_bins)],
                "two_way_by_bin": [float(two[:, bins == b].mean()) for b in range(n_bins)],
                "margin_by_bin": [float(marg[:, bins == b].mean()) for b in range(n_bins)],
                # two-way accuracy of always naming the more frequent verb of each pair
                "majority_two_way": _majority(answers),
                "in_naming": {k: M.in_naming(reps[n.name][k]).tolist() for k in ("verb", "pred")},
            }
            st.log(f"  {name} {n.name}: four-way {four.mean():.3f}, two-way {two.mean():.3f}")
    st.save({name: out})
    obf = [n.name for n in namings if n.name != "standard"]
    with st.stage(f"{name}: similarities"):
        out["cross_naming"] = {}
        for kind in ("verb", "pred"):
            pairs = {"obfuscated-obfuscated": [(a, b) for i, a in enumerate(obf) for b in obf[i + 1 :]],
                     "obfuscated-standard": [(a, "standard") for a in obf]}  # fmt: skip
            out["cross_naming"][kind] = {
                label: {
                    key: np.nanmean(
                        [M.cross_naming(reps[a][kind], reps[b][kind])[key] for a, b in ps], 0
                    ).tolist()
                    for key in ("same", "different", "gap")
                }
                for label, ps in pairs.items()
                if ps
            }
    st.save({name: out})
    with st.stage(f"{name}: interventions"):
        out["interventions"] = interventions(model, namings, traces, runs, reps, settings, out)
    st.save({name: out})
    return out


def interventions(model, namings, traces, runs, reps, settings, out) -> dict:
    """Accuracy per trace under each overwrite of the verb words, paired with the clean run."""
    from mechjax.analyses.fluid_representations import measures as M
    from mechjax.analyses.fluid_representations import sequences as S

    li = len(out["layers"]) // 2
    layer, early, steps = out["layers"][li], settings["early"], settings["steps"]
    res: dict = {}
    for n in namings:
        if n.name == "standard":
            continue
        tr, cands = traces[n.name], S.verb_candidates(n, model.tokenizer)
        rep, std = reps[n.name]["verb"], reps["standard"]["verb"]

        def vecs(src, k, wrong=False, first=False):
            return [np.stack([_late(src, li, int(M.WRONG[c] if wrong else c), first)
                              for c in t.answer[:k]]) for t in tr]  # fmt: skip

        answers = np.stack([t.answer for t in tr])
        clean = np.stack([r["scores"] for r in runs[n.name]])
        conds = {
            "inject_late": (early, vecs(rep, early)),
            "inject_late_wrong": (early, vecs(rep, early, wrong=True)),
            "inject_early": (early, vecs(rep, early, first=True)),
            "replace_standard": (steps, vecs(std, steps)),
            "replace_standard_wrong": (steps, vecs(std, steps, wrong=True)),
        }
        row: dict = {}
        acc_clean = {}
        for k in (early, steps):
            four, two = M.accuracy(clean[:, :k], answers[:, :k])
            marg = M.margin(clean[:, :k], answers[:, :k])[:, 1:].mean(1)
            acc_clean[k] = {"four": four[:, 1:].mean(1), "two": two[:, 1:].mean(1), "margin": marg}
        row["clean"] = {f"{k}_steps": {m: float(v.mean()) for m, v in acc_clean[k].items()}
                        for k in (early, steps)}  # fmt: skip
        for cname, (k, v) in conds.items():
            sc = M.patched_scores(model, tr, k, layer, v, cands, settings["batch"])
            four, two = M.accuracy(sc, answers[:, :k])
            marg = M.margin(sc, answers[:, :k])[:, 1:].mean(1)
            accs = {"four": four[:, 1:].mean(1), "two": two[:, 1:].mean(1), "margin": marg}
            row[cname] = {
                "steps": k,
                **{m: float(a.mean()) for m, a in accs.items()},
                **{
                    f"{m}_change": M.bootstrap_diff(accs[m], acc_clean[k][m], settings["bootstrap"])
                    for m in accs
                },  # fmt: skip
            }
        res[n.name] = row
    return res


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Every model: harvest, similarities, interventions; details.json, results.json,
    report.md and figures."""
    import mechjax as mj
    from mechjax.analyses.fluid_representations import sequences as S
    from mechjax.analyses.fluid_representations.report import results_table, write_report
    from mechjax.analyses.stages import Stages, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke}
    t0 = time.time()
    meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
    details: dict = {}
    loaded = {m: mj.load(m) for m in models}
    namings = S.namings(
        settings["n_random"], [m.tokenizer for m in loaded.values()], settings["seed"]
    )
    walks = S.walks(settings["walks"], settings["steps"], settings["seed"])
    meta["settings"]["namings"] = [n.name for n in namings]
    with Stages(out / "details.json", 3 * len(models), progress=progress, log=log) as st:
        st.save(meta)
        for name, model in loaded.items():
            details[name] = run_model(model, namings, walks, settings, st, name)
            st.save({name: details[name]})
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details, list(models)), "complete": True})
    write_report(out, details, meta)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    return reproduction_parser(
        "fluid-representations",
        "Fluid representations (offline analogue): Blocksworld traces under standard, "
        "Mystery and random names; in-naming and cross-naming similarity; injection and "
        "replacement of action-word representations.",
        quick_help="4 walks of 12 actions, 3 namings",
        models=DEFAULT_MODELS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce fluid-representations --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce)


if __name__ == "__main__":
    raise SystemExit(main())
