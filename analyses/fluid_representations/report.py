"""report.md of the fluid-representations analogue: fidelity first, the paper's claims
beside ours with a verdict each (every number read from details.json), accuracy per
naming, the similarity curves, the interventions, and the figures.

    python -m mechjax.analyses.fluid_representations.report DIR   # report.md, results.json
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIDELITY = """\
**Fidelity: low, an offline analogue of the mechanism.** The paper reads QwQ-32B's own long
reasoning on Mystery Blocksworld (300 four-block puzzles, 15 namings); here
SmolLM2-135M-Instruct and Gemma 3 270M read given demonstrations (random Blocksworld walks over four
blocks, state, next state, then the action) under the standard PDDL names, PlanBench's
Mystery names and random unrelated words, and name each action in turn. Representations
are read at the action and predicate words after three layers; the interventions overwrite
the residual stream at the action words at the middle one of them. The paper's injection
and replacement details are not public, so these are one reading of them. What carries
over is the question (do in-context concept representations converge, across names, and
does moving them change behaviour), not the paper's numbers."""


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def _ci(c: dict) -> str:
    return f"{c['mean']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"


def _obf(d: dict) -> list[str]:
    return [n for n in d["namings"] if n != "standard"]


def _claims(details: dict, models) -> list[str]:
    lines = ["| claim (paper) | ours | verdict |", "|---|---|---|"]
    for m in models:
        d = details[m]
        li = len(d["layers"]) // 2
        obf = _obf(d)
        rise = [d["namings"][n]["in_naming"]["verb"][li] for n in obf]
        first, last = np.nanmean([r[0] for r in rise]), np.nanmean([r[-1] for r in rise])
        lines.append(
            f"| in-naming: an action's representation converges over the context ({m}) | "
            f"consecutive-bin cosine of centred verb vectors, layer {d['layers'][li]}, mean "
            f"over obfuscated namings: {_f(first)} (first pair of bins) -> {_f(last)} (last) | "
            f"{'agrees' if last > first + 0.05 else 'not shown'} |"
        )
        cn = (
            d["cross_naming"]["verb"].get("obfuscated-obfuscated")
            or d["cross_naming"]["verb"]["obfuscated-standard"]
        )
        gap = cn["gap"][li]
        lines.append(
            f"| cross-naming: the same action under different names converges ({m}) | "
            f"same minus different concept cosine, layer {d['layers'][li]}, by bin: "
            + ", ".join(_f(g) for g in gap)
            + " | "
            + ("agrees" if gap[-1] > max(gap[0] + 0.05, 0.05) else "not shown")
            + " |"
        )
        inj = [d["interventions"][n]["inject_late"]["margin_change"] for n in obf]
        wrong = [d["interventions"][n]["inject_late_wrong"]["margin_change"] for n in obf]
        up = [c["ci"][0] > 0 for c in inj]
        lines.append(
            f"| injecting late-context representations into early positions raises accuracy "
            f"({m}) | change of the two-way logit margin (the answer minus the other verb the "
            "hand allows), first steps: "
            + "; ".join(
                f"{n} {_ci(c)} (wrong concept {_ci(w)})" for n, c, w in zip(obf, inj, wrong)
            )
            + f" | {'agrees' if all(up) else 'partly' if any(up) else 'not shown'} |"
        )
        rep = [d["interventions"][n]["replace_standard"]["two_change"] for n in obf]
        rw = [d["interventions"][n]["replace_standard_wrong"]["two_change"] for n in obf]
        small = [c["ci"][0] > -0.05 for c in rep]
        wrong_hurts = [w["ci"][1] < min(0.0, c["mean"]) for c, w in zip(rep, rw)]
        verdict = (
            "agrees" if all(small) and all(wrong_hurts)
            else "partly" if any(small) and any(wrong_hurts)
            else "not shown"
        )  # fmt: skip
        lines.append(
            f"| standard-name representations replace obfuscated ones with little loss ({m}) | "
            f"two-way accuracy change, whole traces: "
            + "; ".join(f"{n} {_ci(c)} (wrong concept {_ci(w)})" for n, c, w in zip(obf, rep, rw))
            + f" | {verdict} |"
        )
    return lines


def _accuracy(details: dict, models) -> list[str]:
    lines = [
        "| model | naming | tokens | four-way (chance 0.25) | two-way | two-way of the "
        "majority verb | two-way by context bin | margin by context bin |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        for n, a in details[m]["namings"].items():
            lines.append(
                f"| {m} | {n} | {a['tokens']} | {_f(a['four_way'])} | {_f(a['two_way'])} | "
                f"{_f(a['majority_two_way'])} | "
                + ", ".join(_f(x, 2) for x in a["two_way_by_bin"])
                + " | "
                + ", ".join(_f(x, 2) for x in a["margin_by_bin"])
                + " |"
            )
    return lines


def _interventions(details: dict, models) -> list[str]:
    lines = [
        "| model | naming | condition | steps | four-way | change | two-way | change | "
        "margin | change |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        for n, row in details[m]["interventions"].items():
            for k, c in row["clean"].items():
                lines.append(
                    f"| {m} | {n} | clean ({k}) | | {_f(c['four'])} | | {_f(c['two'])} | | "
                    f"{_f(c['margin'])} | |"
                )
            for cname, c in row.items():
                if cname == "clean":
                    continue
                lines.append(
                    f"| {m} | {n} | {cname} | {c['steps']} | {_f(c['four'])} | "
                    f"{_ci(c['four_change'])} | {_f(c['two'])} | {_ci(c['two_change'])} | "
                    f"{_f(c['margin'])} | {_ci(c['margin_change'])} |"
                )
    return lines


def figure(out: Path, details: dict, models) -> str:
    from mechjax import plotting

    fig, axes = plotting.subplots(len(models), 3, figsize=(13, 3.4 * len(models)), squeeze=False)
    for row, m in zip(axes, models):
        d = details[m]
        li = len(d["layers"]) // 2
        for n, a in d["namings"].items():
            row[0].plot(a["two_way_by_bin"], "o-", label=n)
            row[1].plot(a["in_naming"]["verb"][li], "o-", label=n)
        for label, c in d["cross_naming"]["verb"].items():
            row[2].plot(c["gap"][li], "o-", label=label)
        row[0].set(title=f"{m}: two-way accuracy", xlabel="context bin", ylim=(0, 1))
        row[0].axhline(0.5, color="0.6", lw=0.8)
        row[1].set(title=f"in-naming (layer {d['layers'][li]})", xlabel="bin pair")
        row[2].set(title="cross-naming gap (same - different)", xlabel="context bin")
        row[2].axhline(0, color="0.6", lw=0.8)
        for ax in row:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fluid_representations.png", dpi=110)
    return "fluid_representations.png"


def write_report(out: Path, details: dict, meta: dict) -> None:
    s = meta["settings"]
    models = [m for m in s["models"] if m in details and "interventions" in details[m]]
    mode = "smoke" if s.get("smoke") else "quick" if s.get("quick") else "full"
    lines = [
        "# Fluid representations in Blocksworld traces: reproduction report",
        "",
        FIDELITY,
        "",
        "Paper: Kharlapenko, Stolfo, Conmy, Sachan, Jin, Fluid Representations in Reasoning "
        f"Models (arXiv 2602.04843). Mode: {mode}; {s['walks']} walks of {s['steps']} "
        f"actions under the namings {', '.join(s['namings'])}; {s['bins']} context bins; "
        f"injection over the first {s['early']} steps; runtime {meta.get('seconds', 0):.0f} s.",
        "",
        "## The paper's claims and ours",
        "",
        *_claims(details, models),
        "",
        "## In-context accuracy per naming",
        "",
        "Four-way: the verb's first token against the other three. Two-way: against the one "
        "other verb the hand allows (pick-up vs unstack, put-down vs stack), the part that "
        "needs the verbs' effects; the walks do not use the two equally often, so the "
        "majority verb's two-way accuracy is the baseline. Margin: the answer's logit minus "
        "that other verb's. Step 0 is counted here (no demonstration before it).",
        "",
        *_accuracy(details, models),
        "",
        "## Interventions",
        "",
        "Accuracy over the queries after the first (each sees at least one overwritten verb); "
        "changes are paired over traces against the clean run, 95% bootstrap intervals. "
        "inject_*: the first steps' verbs overwritten with the same naming's late-context "
        "vector (right or wrong concept) or its early-context vector; replace_standard*: every "
        "verb overwritten with the standard naming's late-context vector.",
        "",
        *_interventions(details, models),
        "",
    ]
    if models:
        lines += [f"![accuracy and similarities]({figure(out, details, models)})", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def results_table(details: dict, models) -> dict:
    """results.json: per model, accuracy per naming, the similarity gaps, the interventions."""
    out: dict = {}
    for m in models:
        d = details.get(m)
        if not d or "interventions" not in d:
            continue
        out[m] = {
            "layers": d["layers"],
            "accuracy": {
                n: {k: a[k] for k in ("four_way", "two_way", "two_way_by_bin")}
                for n, a in d["namings"].items()
            },  # fmt: skip
            "cross_naming_gap_verb": {k: v["gap"] for k, v in d["cross_naming"]["verb"].items()},
            "interventions": d["interventions"],
        }
    return out


def main(argv=None) -> int:
    from mechjax.analyses.stages import report_main

    return report_main(argv, "fluid_representations", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
