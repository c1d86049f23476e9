"""report.md of the arithmetic-probes reproduction: what it reproduces and what not, the
paper's claims and ours side by side (every number read from details.json), the tables
per model and condition, and the figures.

    python -m mechjax.analyses.arithmetic_probes.report DIR   # report.md, results.json again
"""

from __future__ import annotations

from pathlib import Path

FIDELITY = """\
## What this reproduces, and what it does not

- **Models.** SmolLM2-135M-Instruct and Gemma 3 270M (base), prompted with plain text
  (no chat template). The paper probes larger models that get most 3-digit additions
  right; ours get most of them wrong (see "model accuracy" below), so the base rate of
  errors is high and an error detector that always says "wrong" is already accurate:
  **balanced accuracy and AUROC are the numbers to read**, and the majority-class accuracy
  is printed next to every accuracy.
- **Prompts.** `a + b = ` after three worked examples of the same size (the paper's exact
  prompt is not public; the worked examples make the model answer with a number). A
  second condition with 2-digit operands is added because these models are right more
  often there.
- **Probes.** Softmax probes per digit position and a logistic probe of correctness on
  `resid_post` at the last prompt token of every layer, L2-regularised, C chosen on a
  validation split; every number below is on a held-out test split (60/20/20, stratified
  by correctness). The paper's probe details are reconstructed (no public code).
- **Chain of thought.** Templated two-step addition word problems (`mechjax.evals.worlds`)
  in a structured `Step 1: a + b = s` / `Step 2: s + c = t` format after one worked
  example, written by the model
  step by step, instead of addition-only GSM8K problems (not available offline).
- **Re-prompting.** A flagged step is asked again as a bare `a + b = ` prompt (the probes'
  training format) and its new result replaces the old before the chain goes on; the
  paper re-generates the step in context. Compared with no re-prompting and with
  re-prompting every step.
"""


def _f(x, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _runs(details: dict, models) -> list[tuple[str, str, dict]]:
    return [(m, c, r) for m in models for c, r in details.get(m, {}).items() if isinstance(r, dict)]


def _digit_claim(m: str, c: str, pr: dict) -> list[str]:
    gp, pp = pr["digit_accuracy_gold"], pr["digit_accuracy_predicted"]
    gw = pr["digit_accuracy_gold_on_wrong_rows"]
    lg, lp = max(range(len(gp)), key=gp.__getitem__), max(range(len(pp)), key=pp.__getitem__)
    chance = 0.1
    ok = gp[lg] > 2 * chance and pp[lp] > 2 * chance and gw is not None and gw[lg] > 2 * chance
    return [
        f"| predicted and correct digits both decodable, right or wrong ({m}, {c}) | "
        f"best layer: gold digits {gp[lg]:.3f} (layer {lg}; on the rows the model got "
        f"wrong {_f(None if gw is None else gw[lg])}), predicted digits {pp[lp]:.3f} "
        f"(layer {lp}); mean over digit positions, chance about 0.1 | "
        f"{'yes' if ok else 'no'} |"
    ]


def _claims(details: dict, models) -> list[str]:
    lines = [
        "| claim (paper) | ours | agrees? |",
        "|---|---|---|",
    ]
    for m, c, r in _runs(details, models):
        a = r["answers"]
        if not r.get("probes"):
            lines.append(
                f"| error detection above 90% ({m}, {c}) | not measurable: {r.get('skipped')} "
                f"(model accuracy {a['model_accuracy']:.3f}) | - |"
            )
            continue
        pr = r["probes"]
        if not pr.get("detectors"):
            lines.append(
                f"| error detection above 90% ({m}, {c}) | not measurable: {r.get('skipped')} "
                f"(model accuracy {a['model_accuracy']:.3f}) | - |"
            )
            lines += _digit_claim(m, c, pr)
            continue
        cp, dc = pr["detectors"]["correctness_probe"], pr["detectors"]["digit_comparison"]
        above = cp["accuracy"] > 0.9 and cp["accuracy"] > cp["majority_accuracy"]
        lines.append(
            f"| error detection above 90% ({m}, {c}) | correctness probe (layer {cp['layer']}): "
            f"accuracy {cp['accuracy']:.3f} against a majority-class {cp['majority_accuracy']:.3f} "
            f"(error rate {cp['error_rate']:.3f}), balanced accuracy "
            f"{_f(cp['balanced_accuracy'])}, AUROC {_f(cp['auroc'])}; digit comparison (layer "
            f"{dc['layer']}): accuracy {dc['accuracy']:.3f}, balanced {_f(dc['balanced_accuracy'])},"
            f" AUROC {_f(dc['auroc'])} | {'yes' if above else 'no'} |"
        )
        lines += _digit_claim(m, c, pr)
        if r.get("cot"):
            t = r["cot"]["transfer"]["correctness_probe"]
            lines.append(
                f"| probes transfer unchanged to CoT steps ({m}, {c}) | correctness probe on "
                f"{r['cot']['n_steps']} steps: accuracy {t['accuracy']:.3f} (majority "
                f"{t['majority_accuracy']:.3f}), balanced {_f(t['balanced_accuracy'])}, AUROC "
                f"{_f(t['auroc'])} | {'yes' if (t['auroc'] or 0) > 0.6 else 'no'} |"
            )
            rp = r["cot"]["reprompt"]
            s = rp["selective"]
            better = s["final_accuracy"] > rp["none"]["final_accuracy"]
            lines.append(
                f"| selective re-prompting raises accuracy, leaving correct steps mostly "
                f"untouched ({m}, {c}) | final accuracy {rp['none']['final_accuracy']:.3f} -> "
                f"{s['final_accuracy']:.3f} (every step re-prompted: "
                f"{rp['all']['final_accuracy']:.3f}); {s['steps_reprompted']} steps "
                f"re-prompted, {s['correct_steps_reprompted']} of them correct, "
                f"{s['correct_steps_disturbed']} correct steps made wrong, "
                f"{s['errors_fixed']} errors fixed | {'yes' if better else 'no'} |"
            )
    return lines


def _section(m: str, c: str, r: dict) -> list[str]:
    a = r["answers"]
    lines = [
        f"## {m}, {c}",
        "",
        f"- Answers: {a['n_kept']} of {a['n_prompts']} prompts kept ({a['n_no_number']} without "
        f"a number, {a['n_too_many_digits']} with too many digits); model accuracy "
        f"{a['model_accuracy']:.3f} on the kept rows.",
    ]
    ex = a.get("examples") or []
    if ex:
        lines.append(f"- Example: `...{ex[0]['prompt_tail']}` -> `{ex[0]['completion']!r}`")
    pr = r.get("probes")
    if not pr:
        return [*lines, f"- Probes not fitted: {r.get('skipped')}", ""]
    lines += [
        f"- Split: {pr['split']['train']} train, {pr['split']['val']} validation, "
        f"{pr['split']['test']} test rows ({pr['n_test_wrong']} wrong answers in test).",
        "",
        "| layer | predicted digits | gold digits | gold digits, wrong rows | correctness probe val AUROC |",
        "|---|---|---|---|---|",
    ]
    gw = pr["digit_accuracy_gold_on_wrong_rows"] or [None] * len(pr["digit_accuracy_gold"])
    dets = pr.get("detectors")
    va = dets["correctness_probe"]["val_auroc_per_layer"] if dets else [None] * len(gw)
    for l, (p, g, w, v) in enumerate(
        zip(pr["digit_accuracy_predicted"], pr["digit_accuracy_gold"], gw, va)
    ):
        lines.append(f"| {l} | {p:.3f} | {g:.3f} | {_f(w)} | {_f(v)} |")
    if not dets:
        return [*lines, "", f"No error detectors: {r.get('skipped')}.", ""]
    lines += ["", "Error detectors on the test rows:", ""]
    lines += [
        "| detector | layer | accuracy | majority | balanced accuracy | AUROC | error rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, d in pr["detectors"].items():
        lines.append(
            f"| {k} | {d['layer']} | {d['accuracy']:.3f} | {d['majority_accuracy']:.3f} | "
            f"{_f(d['balanced_accuracy'])} | {_f(d['auroc'])} | {d['error_rate']:.3f} |"
        )
    cot = r.get("cot")
    if cot:
        lines += [
            "",
            f"Chain of thought: {cot['n_problems']} problems, {cot['n_steps']} steps, step "
            f"error rate {cot['step_error_rate']:.3f}.",
            "",
            "| detector on CoT steps | accuracy | majority | balanced accuracy | AUROC |",
            "|---|---|---|---|---|",
        ]
        for k, d in cot["transfer"].items():
            lines.append(
                f"| {k} | {d['accuracy']:.3f} | {d['majority_accuracy']:.3f} | "
                f"{_f(d['balanced_accuracy'])} | {_f(d['auroc'])} |"
            )
        lines += ["", "| re-prompting | final accuracy | step accuracy |", "|---|---|---|"]
        for k, d in cot["reprompt"].items():
            lines.append(f"| {k} | {d['final_accuracy']:.3f} | {d['step_accuracy']:.3f} |")
    return [*lines, ""]


def write_figures(out: Path, details: dict, models) -> list[str]:
    """Per model and condition: digit-probe test accuracy per layer (predicted vs gold)
    and the correctness probe's validation AUROC per layer."""
    from mechjax import plotting

    names = []
    for m, c, r in _runs(details, models):
        pr = r.get("probes")
        if not pr:
            continue
        fig, ax = plotting.subplots(figsize=(6.0, 3.6))
        layers = list(range(len(pr["digit_accuracy_gold"])))
        ax.plot(layers, pr["digit_accuracy_predicted"], marker=".", label="predicted answer digits")
        ax.plot(layers, pr["digit_accuracy_gold"], marker=".", label="gold answer digits")
        if pr["digit_accuracy_gold_on_wrong_rows"]:
            ax.plot(
                layers,
                pr["digit_accuracy_gold_on_wrong_rows"],
                ls="--",
                label="gold digits, rows the model got wrong",
            )
        if pr.get("detectors"):
            auc = pr["detectors"]["correctness_probe"]["val_auroc_per_layer"]
            ax.plot(layers, auc, ls=":", marker="x", label="correctness probe AUROC (val)")
        ax.axhline(0.1, color="grey", lw=0.5)
        ax.set_xlabel("layer (resid_post, last prompt token)")
        ax.set_ylabel("test accuracy / AUROC")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{m}, {c}: digit probes per layer", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = f"{m}_{c}_probes.png"
        fig.savefig(out / path, dpi=110)
        names.append(path)
    return names


def write_report(out: Path, details: dict, meta: dict) -> Path:
    settings = meta["settings"]
    models = [m for m in settings["models"] if m in details]
    smoke = " — smoke run, numbers not meaningful" if settings.get("smoke") else ""
    lines = [
        "# Reproduction: Probing for Arithmetic Errors in Language Models",
        "",
        "Sun, Stolfo, Sachan (EMNLP 2025). Run: "
        f"`mechjax reproduce arithmetic-probes{' --quick' if settings.get('quick') else ''}` "
        f"({meta.get('seconds', 0):.0f} s on CPU){smoke}; {settings['n']} prompts per "
        f"condition, {settings['n_cot']} word problems.",
        "",
        *([f"How it ran: {details['runs']}.", ""] if details.get("runs") else []),
        FIDELITY,
        "## The paper's claims and ours",
        "",
        *_claims(details, models),
        "",
    ]
    for m, c, r in _runs(details, models):
        lines += _section(m, c, r)
    figures = write_figures(out, details, models)
    if figures:
        lines += ["## Figures", "", *[f"![{f[:-4]}]({f})" for f in figures], ""]
    lines += [
        "## Files",
        "",
        "- `results.json`: model -> `best_layer`, `error_detection_accuracy`, "
        "`error_detection_auroc` (the correctness probe, 3-digit condition), "
        "`digit_accuracy_predicted` and `digit_accuracy_gold` per layer (test rows, mean over "
        "digit positions).",
        "- `details.json`: every condition and stage (per-position accuracies, both detectors "
        "with their per-layer validation AUROC, CoT transfer and re-prompting, settings, "
        "stage timings).",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    """`python -m mechjax.analyses.arithmetic_probes.report DIR`: report.md and results.json again."""
    from mechjax.analyses.arithmetic_probes import results_table
    from mechjax.analyses.stages import report_main

    return report_main(argv, "arithmetic_probes", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
