"""report.md of the groundedness analogue: fidelity first, the paper's claims beside ours
with a verdict each (every number read from details.json), the judge's calibration, the
table per model and decoding, example sentences, and the figure.

    python -m mechjax.analyses.groundedness.report DIR   # report.md, results.json again
"""

from __future__ import annotations

from pathlib import Path

FIDELITY = """\
**Fidelity: low, an offline analogue of the mechanism, not of the paper's numbers.** The
paper's datasets (ASQA, QAMPARI, ELI5), models (Falcon, Llama 2, Mistral, Vicuna and
others, 7B to 70B), its grounding judge (TRUE, an 11B NLI model) and the pre-training
corpora it also grounds in are not available offline. Here: questions about invented
organisations, two documents retrieved by MiniLM similarity into the prompt, answers
from SmolLM2-135M-Instruct and Gemma 3 270M (a base model) with greedy decoding, beam
search (4 beams) and nucleus sampling, each sentence judged grounded by a MiniLM cosine
threshold calibrated on labelled pairs, and checked against string-match ground truth
(invented values can only be right if read from the documents). The judge measures
similarity, not entailment; the string match misses invented names a model makes up
that are not in the world's vocabulary; size and instruction tuning are confounded."""


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _claims(details: dict, models) -> list[str]:
    from mechjax.analyses.groundedness import DECODINGS

    lines = ["| claim (paper) | ours | verdict |", "|---|---|---|"]
    parts, unsup = [], []
    for m in models:
        for dec in DECODINGS:
            d = details[m]["decodings"].get(dec)
            if not d or not d["n_em_plus"]:
                continue
            parts.append(
                f"{m} {dec}: {_pct(1 - d['em_plus_supported_truth'])} by string match, "
                f"{_pct(1 - d['em_plus_grounded_judge'])} by the judge "
                f"(of {d['n_em_plus']})"
            )
            unsup.append(1 - d["em_plus_supported_truth"])
    verdict = "agrees" if unsup and max(unsup) >= 0.1 else "not shown" if unsup else "not measured"
    lines.append(
        "| a significant fraction of sentences with a gold answer (EM+) is ungrounded | "
        + ("; ".join(parts) or "no EM+ sentences")
        + f" | {verdict} |"
    )
    for m in models:
        comp = details[m].get("comparisons", {})
        cells, better = [], []
        for key in ("beam - nucleus: grounded", "beam - nucleus: supported",
                    "beam - greedy: grounded", "beam - greedy: supported"):  # fmt: skip
            c = comp.get(key)
            if c and c["mean"] is not None:
                cells.append(f"{key}: {c['mean']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]")
                better.append(c["ci"][0] > 0 if "nucleus" in key else None)
        vs_nucleus = [b for b in better if b is not None]
        verdict = (
            "agrees (beam above nucleus, intervals above 0)"
            if vs_nucleus and all(vs_nucleus)
            else "partly"
            if any(vs_nucleus)
            else "not shown"
        )
        lines.append(
            f"| beam search grounds better than sampling (and greedy) ({m}) | per-question "
            f"grounded fraction, paired, 95% bootstrap: {'; '.join(cells) or 'n/a'} | {verdict} |"
        )
    if len(models) >= 2:
        rows = []
        for m in models:
            d = details[m]["decodings"].get("greedy")
            if d:
                rows.append(
                    f"{m}: {_pct(d['supported_truth'])} of checkable sentences supported, EM "
                    f"{_pct(d['em'])}"
                )
        lines.append(
            "| larger and instruction-tuned models ground better | greedy: "
            + "; ".join(rows)
            + " | not testable: the larger model (Gemma 3 270M) is the base one |"
        )
    return lines


def _calibration(c: dict) -> list[str]:
    held = c["held_out"]
    kinds = {k: v for k, v in held.items() if k not in ("accuracy", "balanced_accuracy")}
    return [
        "## The judge",
        "",
        f"MiniLM (all-MiniLM-L6-v2) cosine of a sentence to its closest document sentence; "
        f"threshold **{c['threshold']:.3f}**, fit where balanced accuracy is best on "
        f"{c['n_fit']} labelled pairs ({_f(c['fit_balanced_accuracy'])}), scored on "
        f"{c['n_held_out']} held-out pairs: accuracy {_f(held['accuracy'])}, balanced "
        f"{_f(held['balanced_accuracy'])}; per kind: "
        + ", ".join(f"{k} {_f(v)}" for k, v in sorted(kinds.items()))
        + ". Mean support per kind: "
        + ", ".join(f"{k} {_f(v, 3)}" for k, v in sorted(c["mean_support_by_kind"].items()))
        + ". "
        + (
            "A swapped value keeps most of the similarity, so the judge calls most swaps grounded"
            if kinds.get("swap", 1.0) < 0.5
            else f"The judge rejects {_pct(kinds.get('swap'))} of swapped values here, but "
            "their support sits between paraphrases and other organisations' facts"
        )
        + ": the string match is the ground truth the judge is checked against below.",
    ]


def _table(details: dict, models) -> list[str]:
    from mechjax.analyses.groundedness import DECODINGS

    lines = [
        "| model | decoding | EM (answers) | sentences / answer | EM+ sentences | EM+ grounded "
        "(judge) | EM+ supported (string match) | all grounded (judge) | checkable supported "
        "(string match) | judge vs string match (acc / balanced) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        for dec in DECODINGS:
            d = details[m]["decodings"].get(dec)
            if not d:
                continue
            lines.append(
                f"| {m} | {dec} | {_pct(d['em'])} | {d['sentences_per_answer']:.1f} | "
                f"{d['n_em_plus']} | {_pct(d['em_plus_grounded_judge'])} | "
                f"{_pct(d['em_plus_supported_truth'])} | {_pct(d['grounded_judge'])} | "
                f"{_pct(d['supported_truth'])} (of {d['n_checkable']}) | "
                f"{_f(d['judge_vs_truth_accuracy'])} / {_f(d['judge_vs_truth_balanced'])} |"
            )
    return lines


def _examples(details: dict, models, k: int = 2) -> list[str]:
    from mechjax.analyses.groundedness import DECODINGS

    lines = ["## Examples (first questions)", ""]
    qs = details["task"]["questions"]
    for m in models:
        for dec in DECODINGS:
            answers = details[m]["answers"].get(dec, [])
            for i, a in enumerate(answers[:k]):
                lines.append(f"- {m}, {dec}, Q: {qs[i]['text']} (gold {qs[i]['gold']})")
                for s in a["sentences"]:
                    tag = "EM+ " if s["em_plus"] else ""
                    truth = {True: "supported", False: "unsupported", None: "no values"}[
                        s["supported"]
                    ]
                    lines.append(
                        f"  - {tag}[{'grounded' if s['grounded'] else 'ungrounded'} "
                        f"{s['support']:.2f}; {truth}] {s['text']}"
                    )
                if not a["sentences"]:
                    lines.append("  - (no sentence)")
    return lines


def figure(out: Path, details: dict, models) -> str:
    from mechjax import plotting
    from mechjax.analyses.groundedness import DECODINGS

    fig, axes = plotting.subplots(1, 2, figsize=(10, 3.6))
    keys = [("em_plus_supported_truth", "EM+ supported (string match)"),
            ("supported_truth", "checkable supported (string match)")]  # fmt: skip
    width = 0.8 / max(1, len(models))
    for ax, (key, title) in zip(axes, keys):
        for i, m in enumerate(models):
            vals = [details[m]["decodings"].get(d, {}).get(key) for d in DECODINGS]
            xs = [j + i * width for j in range(len(DECODINGS))]
            ax.bar(xs, [v if v is not None else 0 for v in vals], width, label=m)
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(DECODINGS))])
        ax.set_xticklabels(DECODINGS)
        ax.set(ylim=(0, 1), title=title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "grounded_fraction.png", dpi=110)
    return "grounded_fraction.png"


def write_report(out: Path, details: dict, meta: dict) -> None:
    s = meta["settings"]
    models = [m for m in s["models"] if m in details]
    t = details["task"]
    mode = "smoke" if s.get("smoke") else "quick" if s.get("quick") else "full"
    lines = [
        "# Groundedness of retrieval-augmented long-form answers: reproduction report",
        "",
        FIDELITY,
        "",
        f"Paper: Stolfo, Groundedness in Retrieval-augmented Long-form Generation (NAACL "
        f"Findings 2024). Mode: {mode}; {t['n_questions']} questions over "
        f"{t['n_documents']} documents, retrieval accuracy (gold document in the top 2) "
        f"{_pct(t['retrieval_accuracy'])}; {s['max_new']} new tokens per answer; runtime "
        f"{meta.get('seconds', 0):.0f} s.",
        "",
        "## The paper's claims and ours",
        "",
        *_claims(details, models),
        "",
        *_calibration(details["calibration"]),
        "",
        "## Per model and decoding",
        "",
        "EM+ = a sentence containing the gold answer string; checkable = a sentence stating "
        "at least one number or invented name; supported = all of them occur in one "
        "retrieved document.",
        "",
        *_table(details, models),
        "",
    ]
    if models:
        lines += [f"![grounded fractions]({figure(out, details, models)})", ""]
        lines += _examples(details, models)
    (out / "report.md").write_text("\n".join(lines) + "\n")


def results_table(details: dict, models) -> dict:
    """results.json: task, judge, and per model x decoding the headline rates."""
    keys = ("em", "n_em_plus", "em_plus_grounded_judge", "em_plus_supported_truth",
            "grounded_judge", "supported_truth", "judge_vs_truth_accuracy")  # fmt: skip
    out: dict = {
        "retrieval_accuracy": details["task"]["retrieval_accuracy"],
        "judge": {k: details["calibration"][k] for k in ("threshold", "held_out")},
    }
    for m in models:
        out[m] = {dec: {k: d[k] for k in keys} for dec, d in details[m]["decodings"].items()}
        out[m]["comparisons"] = details[m].get("comparisons", {})
    return out


def main(argv=None) -> int:
    from mechjax.analyses.stages import report_main

    return report_main(argv, "groundedness", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
