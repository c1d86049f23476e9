"""report.md of the MIB circuit-track reproduction: fidelity first, the paper's claims and
ours side by side (every number read from details.json), the CPR/CMD table per task and
model, the AUROC column, and the faithfulness curves.

    python -m mechjax.analyses.mib.report DIR   # report.md, results.json again
"""

from __future__ import annotations

from pathlib import Path

FIDELITY = """\
## What this reproduces, and what it does not

- **Method.** MIB's circuit-localization track as its code defines it
  (`hannamw/MIB-circuit-track`, `hannamw/EAP-IG`): the EAP-IG graph with every query
  head ungrouped; scores from EAP, EAP-IG (inputs, left Riemann sum; activations),
  clean-corrupted and information flow routes; circuits of `int(k * n_edges)` edges at
  MIB's ten fractions, pruned; non-circuit edges patched with the counterfactual run;
  f normalised by the clean run and the empty circuit; CPR from the signed ranking, CMD
  from the absolute one, trapezoids on a linear axis; IFR built greedily from the
  logits. Learned masks are edge pruning with hard-concrete gates (Bhaskar et al. 2024),
  one mask per fraction trained together; MIB's own mask baselines (edge pruning, UGS)
  are trained far longer than here.
- **Models and data.** MIB's models (GPT-2, Qwen2.5, Gemma 2, Llama 3.1) and its HF
  datasets are not offline. The runs use SmolLM2-135M and Gemma 3 270M (quantized GGUF
  weights) with regenerated tasks: IOI from the Wang et al. templates with the
  `s2_io_flip` counterfactual, and two-operand addition with a random counterfactual
  (other operands and result), MIB's `arithmetic_addition` analogue. The pair counts are
  a few dozen, not MIB's hundreds (settings below); scores come from one set of pairs and
  faithfulness from another.
- **Ground truth.** InterpBench (MIB's AUROC model) is not offline: a two-layer
  attention-only transformer trained here on induction, whose circuit (previous-token
  head into the induction head's key, induction head into the logits) is read from its
  attention patterns, stands in (`groundtruth.py`).
"""

PAPER_CPR = "EAP-IG-inputs CPR in the paper: IOI 1.63-3.20, arithmetic (Llama) 0.99"


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


SOLVES = 0.5  # below this top-1 rate of the answer, the report says the model rarely does it


def _unsolved(row: dict) -> str | None:
    """Why a (model, task) row measures no method, or None: f divides by the metric's
    clean-minus-counterfactual gap, and a gap within two standard errors of the pairs'
    gaps makes every f noise."""
    gap, se = row.get("gap"), row.get("gap_se")
    if gap is None or gap > 2 * se:
        return None
    return (
        f"not measurable: the clean and counterfactual runs do not differ beyond the pairs' "
        f"noise (metric gap {_f(gap)} +- {_f(se)} s.e.; f divides by it); the answer is "
        f"the model's top token on {row['clean_top1']:.0%} of the clean prompts (MIB runs "
        "a task only on models that do it: addition on Llama 3.1 8B alone)"
    )


def _premise(row: dict) -> str | None:
    """`ours | verdict` of the premise every method claim on a row rests on."""
    if "clean_top1" not in row:
        return None
    ours = (f"answer top-1 on {row['clean_top1']:.0%} of the clean prompts; metric gap "
            f"{_f(row['gap'])} +- {_f(row['gap_se'])}")  # fmt: skip
    why = _unsolved(row)
    if why:
        return f"{ours} | no: {why}"
    if row["clean_top1"] < SOLVES:
        return (f"{ours} | partly: the gap is measurable, but the model rarely gives the "
                "answer, so circuits here explain its preference for the answer over the "
                "counterfactual's, not the task")  # fmt: skip
    return f"{ours} | agrees"


def _rows(details, models):
    from mechjax.analyses.mib import TASKS

    for m in models:
        for t in TASKS:
            row = details.get(m, {}).get(t)
            if row:
                yield m, t, row


def _claims(details: dict, models) -> list[str]:
    from mechjax.analyses.mib import METHODS

    lines = ["| claim (paper) | ours | verdict |", "|---|---|---|"]
    for m, t, row in _rows(details, models):
        premise = _premise(row)
        if premise:
            lines.append(f"| the model does the task, MIB's premise ({t}, {m}) | {premise} |")
        if _unsolved(row):  # no verdict on the methods where f is noise
            continue
        rnd = row.get("random")
        if rnd:
            ok = abs(rnd["cpr"] - 0.25) <= 0.1 and abs(rnd["cmd"] - 0.75) <= 0.1
            lines.append(
                f"| random ranking: CPR ~ 0.25, CMD ~ 0.75 ({t}, {m}) | CPR {_f(rnd['cpr'])}, "
                f"CMD {_f(rnd['cmd'])} | {'agrees' if ok else 'does not agree'} |"
            )
        done = {x: row[x] for x in METHODS if x in row and x != "random"}
        if done:
            best_cpr = max(done, key=lambda x: done[x]["cpr"])
            best_cmd = min(done, key=lambda x: done[x]["cmd"])
            good = {"eap_ig_inputs", "eap_ig_activations", "masks"}
            ok = best_cpr in good or best_cmd in good
            lines.append(
                f"| EAP-IG and mask optimisation are the best methods ({t}, {m}) | best CPR: "
                f"{best_cpr} {_f(done[best_cpr]['cpr'])}; best CMD: {best_cmd} "
                f"{_f(done[best_cmd]['cmd'])} | {'agrees' if ok else 'does not agree'} |"
            )
        ig = row.get("eap_ig_inputs")
        if ig:
            lines.append(
                f"| {PAPER_CPR} ({t}, {m}) | CPR {_f(ig['cpr'])} | other models and data: "
                "magnitudes not comparable |"
            )
    gt = details.get("groundtruth")
    if gt and gt.get("auroc"):
        auc = gt["auroc"]
        best = max((x for x in auc if x != "random"), key=lambda x: auc[x]["auroc"], default=None)
        if best:
            rnd = auc.get("random", {})
            bar = rnd.get("auroc", 0) + 2 * rnd.get("auroc_sd", 0)
            ok = auc[best]["auroc"] > bar
            lines.append(
                "| methods recover a known circuit (InterpBench AUROC; EAP-IG best) | "
                f"best {best} {_f(auc[best]['auroc'])}, random {_random_auroc(rnd)} | "
                f"{'agrees' if ok else 'does not agree'} that the best method beats random "
                "(by more than two sd of random rankings) |"
            )
        rnd = gt.get("random", {})
        if rnd:
            ok = abs(rnd["cpr"] - 0.25) <= 0.05 and abs(rnd["cmd"] - 0.75) <= 0.05
            lines.append(
                f"| random ranking on the ground-truth model: CPR ~ 0.25, CMD ~ 0.75 | "
                f"CPR {_f(rnd['cpr'])}, CMD {_f(rnd['cmd'])} (mean of "
                f"{len(rnd['cpr_each'])} rankings) | "
                + ("agrees" if ok else f"does not agree ({_small_graph(gt)})")
                + " |"
            )
    return lines


def _small_graph(gt: dict) -> str:
    """Why random CPR/CMD miss 0.25/0.75 on the tiny ground-truth graph."""
    half = [f[-2] for f in gt["random"].get("f_signed_each", [])]
    seen = f": f at k = 0.5 is {_f(min(half))} to {_f(max(half))} here" if half else ""
    return (
        "not a bookkeeping error: the same code gives 0.25/0.75 on the language models, "
        "where a random half of the edges keeps f near 0; on "
        f"{gt['n_edges']} edges a random half can hold a working part of a circuit this "
        f"small{seen}, and CPR grows by a quarter of f(0.5)"
    )


def _random_auroc(r: dict) -> str:
    if "auroc_sd" not in r:
        return f"{_f(r.get('auroc'))} (one ranking)"
    return f"{_f(r['auroc'])} +- {_f(r['auroc_sd'])} (mean +- sd of {r['n']} rankings)"


def _cc_notes(details: dict, models) -> list[str]:
    """Explain clean-corrupted's random-like CPR beside a near-perfect CMD where it occurs."""
    out = []
    for m, t, row in _rows(details, models):
        cc, rnd = row.get("clean_corrupted"), row.get("random")
        if cc and rnd and cc["cpr"] < rnd["cpr"] + 0.1 and cc["cmd"] < 0.1:
            out.append(
                f"Clean-corrupted on {t}, {m} (CPR {_f(cc['cpr'])} like random, CMD "
                f"{_f(cc['cmd'])} near perfect) is the method, not a sign error: its score "
                "is the mean of the clean and corrupted gradients times the activation "
                "difference, and on the edge nearly every path needs (SmolLM2 IOI: input "
                "-> m0, endpoint gradients +0.52 and -1.04 against an exact effect of +10.1) "
                "the two disagree, so the score is negative; the signed ranking puts that "
                "edge last and its circuits prune to almost nothing, while the absolute "
                "ranking keeps it first (tests pin both the score and the pruning)."
            )
    return out + [""] if out else []


def _tables(details: dict, models) -> list[str]:
    from mechjax.analyses.mib import METHODS

    out: list[str] = []
    for m, t, row in _rows(details, models):
        out += [
            f"### {t}, {m}",
            "",
            f"{row['n_edges']} edges; {row['n_attr']} attribution pairs, {row['n_eval']} "
            f"evaluation pairs of {row['prompt_tokens']} tokens, e.g. `{row['example']!r}`."
            + _accuracy(row),
            "",
            "| method | CPR (signed) | CMD (absolute) | mean f (signed) | m(full) | m(empty) "
            "| seconds (scores + evaluation) |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in METHODS:
            r = row.get(x)
            if r is None:
                out.append(f"| {x} | not run | | | | | |")
                continue
            out.append(
                f"| {x} | {_f(r['cpr'])} | {_f(r['cmd'])} | {_f(r['mean_f_signed'])} | "
                f"{_f(r['full'])} | {_f(r['empty'])} | {r['attribution_seconds']} + "
                f"{r['evaluation_seconds']} |"
            )
        out.append("")
    return out


def _accuracy(row: dict) -> str:
    if "clean_top1" not in row:
        return ""
    why = _unsolved(row)
    return (
        f" On the clean prompts the answer is the model's top token {row['clean_top1']:.0%} "
        f"of the time and beats the wrong answer {row['clean_prefers_answer']:.0%}; the "
        f"metric's clean-minus-counterfactual gap is {_f(row['gap'])} +- {_f(row['gap_se'])} "
        "(s.e. over the pairs)." + (f" **This row is {why}.**" if why else "")
    )


def _gt_lines(gt: dict) -> list[str]:
    if not gt:
        return []
    lines = [
        "## Ground truth (InterpBench analogue)",
        "",
        f"Induction loss {_f(gt['train_loss'], 3)}; previous-token scores per layer-0 head "
        f"{[round(x, 2) for x in gt['roles']['prev_token']]}, induction scores per layer-1 "
        f"head {[round(x, 2) for x in gt['roles']['induction']]}; the true circuit has "
        f"{gt['n_truth_edges']} of {gt['n_edges']} edges. AUROC is MIB's (greedy circuits at "
        "the ten fractions, pruned, trapezoid of TPR over FPR from the first fraction on); "
        "`full ROC` is the area under the whole ROC curve of the scores. On so small a "
        "graph one ranking's AUROC is noisy: a single random ranking scatters by about 0.1 "
        "around 0.5 (MIB's recipe shifts the mean by a few hundredths), so the random row "
        "is the mean and sd over many random rankings, and a method beats random only "
        "by more than about twice that sd.",
        "",
        "| method | AUROC (MIB) | full ROC |",
        "|---|---|---|",
    ]
    for x, v in gt["auroc"].items():
        if "auroc_sd" in v:
            lines.append(
                f"| {x} (mean +- sd of {v['n']}) | {_f(v['auroc'])} +- {_f(v['auroc_sd'])} | "
                f"{_f(v['rank_auroc'])} +- {_f(v['rank_auroc_sd'])} |"
            )
        else:
            lines.append(f"| {x} | {_f(v['auroc'])} | {_f(v['rank_auroc'])} |")
    return lines + [""]


def _figure(out: Path, details: dict, models) -> str | None:
    from mechjax.analyses.mib import METHODS

    panels = list(_rows(details, models))
    if not panels:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
    for ax, (m, t, row) in zip(axes[0], panels):
        for x in METHODS:
            if x in row:
                ax.plot(row[x]["fractions"], row[x]["f_signed"], marker="o", ms=3, label=x)
        ax.set_xscale("log")
        ax.axhline(1, color="grey", ls=":")
        ax.axhline(0, color="grey", ls=":")
        gone = "\nnot measurable: the metric gap is within the pairs' noise"
        ax.set_title(f"{t}, {m}" + (gone if _unsolved(row) else ""), fontsize=9)
        ax.set_xlabel("fraction of edges (signed ranking)")
    axes[0][0].set_ylabel("faithfulness f")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    path = out / "faithfulness_curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _missing(details: dict, s: dict) -> list[str]:
    """The (model, task, method) runs the settings asked for and details.json lacks."""
    gone = []
    for m in s.get("models", []):
        for t in s.get("tasks", []):
            row = details.get(m, {}).get(t, {})
            lost = [x for x in s.get("methods", []) if x not in row]
            if lost:
                gone.append(f"{t} on {m}: {', '.join(lost)}")
    from mechjax.analyses.stages import partial_lines

    return partial_lines(gone, details)


def _resumed(details: dict) -> list[str]:
    """A resumed run names the stages it kept from the earlier one."""
    kept = details.get("resumed") or []
    if not kept:
        return []
    note = f" About that run: {details['earlier_note']}" if details.get("earlier_note") else ""
    return [
        f"Resumed (`--resume`): {len(kept)} stages were kept from an earlier run with the "
        f"same settings ({'; '.join(kept)}); their seconds count in the total.{note}",
        "",
    ]


def write_report(out: Path, details: dict, meta: dict) -> None:
    models = [m for m in meta["settings"]["models"] if m in details]
    s = meta["settings"]
    fig = _figure(out, details, models)
    kind = "smoke" if s.get("smoke") else "quick" if s.get("quick") else "full"
    lines = [
        "# MIB circuit track: CPR and CMD (Mueller et al. 2025)",
        "",
        "Fidelity: an offline analogue of MIB's circuit-localization track. Graph, scores, "
        "circuit construction, pruning, fractions and the CPR/CMD bookkeeping follow MIB's "
        "code; the models (SmolLM2-135M, Gemma 3 270M), the regenerated IOI and addition "
        "pairs (a few dozen, not MIB's hundreds), the short mask training and the "
        "ground-truth model (a self-trained induction transformer instead of InterpBench) "
        "depart from it. Details below.",
        "",
        f"Settings ({kind} run, {meta.get('seconds', 0):.0f} s): {s.get('n_attr')} attribution "
        f"and {s.get('n_eval')} evaluation pairs per task, batches of {s.get('batch')}, "
        f"EAP-IG {s.get('ig_steps')} steps (activations: {s.get('act_steps')}), masks "
        f"{s.get('mask_steps')} steps of {s.get('mask_batch')} pairs per fraction target."
        + (
            " This run leaves EAP-IG over activations to the ground-truth model: it costs "
            "steps x (1 + 2 n_layers) gradient passes (61 per step on SmolLM2); the full run "
            "has it on the language models too."
            if "eap_ig_activations" not in s.get("methods", [])
            else ""
        ),
        "",
        *_missing(details, s),
        *_resumed({**meta, **details}),
        "## Claims",
        "",
        *_claims(details, models),
        "",
        FIDELITY,
        "## CPR and CMD",
        "",
        *_tables(details, models),
        *_cc_notes(details, models),
    ]
    if fig:
        lines += [f"![faithfulness curves]({fig})", ""]
    lines += _gt_lines(details.get("groundtruth") or {})
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    from mechjax.analyses.mib import results_table
    from mechjax.analyses.stages import report_main

    return report_main(argv, "mib", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
