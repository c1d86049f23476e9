"""report.md and figures of the Socratic CoT reproduction, every number read from
details.json.

    python -m mechjax.analyses.socratic_cot.report DIR   # report.md, results.json again
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = {
    "answer": "answer only",
    "cot": "CoT",
    "socratic": "Socratic pair (QG + QA)",
    "unified": "Socratic unified",
}

FIDELITY = """\
## What this reproduces, and what it does not

- **Teacher.** The paper prompts GPT-3 for subquestion / solution pairs and keeps the
  chains whose final answer is right. No such teacher is offline: the rule-based teacher
  `mechjax.evals.socratic.teach` writes the three formats from each problem's logical form
  (`mechjax.evals.worlds`), exactly, with the same equations in the CoT and the Socratic
  solutions, so the formats differ only in the decomposition.
- **Data.** GSM8K, StrategyQA and SVAMP are not offline. The problems are templated
  multi-step arithmetic word problems with additive steps (transfers, comparisons by
  "more" / "fewer", part-whole; one sentence per step, in the order of the computation;
  numbers 2-9 in the text, every value below 50); the generator's multiplicative
  relations (rates, "times as many") are left out, so that students this small can learn
  the arithmetic in the run's budget; longer chains in the test than in training.
- **Students.** The paper fine-tunes pretrained GPT-2 (small to XL). Here the students
  are small Llama-config transformers trained from scratch on a closed word vocabulary,
  numbers written digit by digit; all students of a size share the architecture, the
  data, the optimiser and the number of updates.
- **Diagnosis.** Beside the four methods, the solver is run with the teacher's
  subquestions in place of the decomposer's: the pair's accuracy with a perfect
  decomposer, which splits its errors between the two students.
- **Inference.** Greedy decoding with the compiled KV-cache loop; the pair runs its loop
  (the decomposer asks until it emits its stop marker, the solver answers each
  subquestion given the earlier pairs), as in the paper.
- **Not reproduced.** The paper's numbers (GSM8K accuracy of GPT-2 students) and its
  comparison with GPT-3 6B; here the closest analogue is the small model's Socratic pair
  against the larger model's CoT student.
"""


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _summary(details: dict) -> dict:
    from mechjax.analyses.socratic_cot import summary

    return summary(details, details["settings"])


def bootstrap(details: dict, terms, ratio_of=None, n: int = 1000, seed: int = 0):
    """95% percentile interval of sum(w * exact match(size, method, over ks)) over `terms`
    [(w, size, method, ks)], resampling the test problems of each chain length with
    replacement (the same problems for every method and size: a paired bootstrap).
    With `ratio_of` (a second term list), the interval of the ratio of the two sums.
    None when a run has no per-problem results."""

    def rows(size, method, k):
        r = details.get(size, {}).get("results", {}).get(method, {}).get(str(k), {})
        return r.get("correct")

    every = list(terms) + list(ratio_of or [])
    table = {}
    for _, size, method, ks in every:
        for k in ks:
            c = rows(size, method, k)
            if c is None:
                return None
            table[(size, method, k)] = np.asarray(c, float)
    rng = np.random.default_rng(seed)
    lengths = {k: len(v) for (_, _, k), v in table.items()}
    stats = []
    for _ in range(n):
        idx = {k: rng.integers(0, m, m) for k, m in lengths.items()}

        def total(ts):
            return sum(
                w * np.mean([table[(sz, me, k)][idx[k]].mean() for k in ks]) for w, sz, me, ks in ts
            )

        num = total(terms)
        if ratio_of is None:
            stats.append(num)
        else:
            den = total(ratio_of)
            stats.append(num / den if den else np.nan)
    stats = np.asarray(stats)
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return None
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def _ci(ci, pct: bool = False) -> str:
    if ci is None:
        return ""
    if pct:
        return f" [95% CI {100 * ci[0]:+.0f}%, {100 * ci[1]:+.0f}%]"
    return f" [95% CI {ci[0]:+.3f}, {ci[1]:+.3f}]"


def _above(ci) -> bool | None:
    return None if ci is None else ci[0] > 0


def _claims(details: dict) -> list[str]:
    summ = _summary(details)
    s = details["settings"]
    inside = list(s["train_steps_range"])
    beyond = [k for k in s["test_steps_range"] if k not in inside]
    lines = ["| claim (paper) | ours | verdict |", "|---|---|---|"]
    for name, row in summ.items():
        a, c, so, u = (row[m]["in_range"] for m in ("answer", "cot", "socratic", "unified"))
        d_c = bootstrap(details, [(1, name, "cot", inside), (-1, name, "answer", inside)])
        d_s = bootstrap(details, [(1, name, "socratic", inside), (-1, name, "answer", inside)])
        if None in (a, c, so):
            verdict = "n/a"
        elif d_c is None or d_s is None:
            verdict = "agrees" if min(c, so) > a else "does not agree"
        elif _above(d_c) and _above(d_s):
            verdict = "agrees"
        elif min(c, so) > a:
            verdict = "same direction, not beyond the noise for both"
        else:
            verdict = "does not agree"
        lines.append(
            f"| Socratic CoT and CoT well above answer-only ({name}) | exact match on "
            f"{inside[0]}-{inside[-1]} steps: answer only {_f(a)}, CoT {_f(c)}, Socratic pair "
            f"{_f(so)}, unified {_f(u)}; CoT - answer {_f((c or 0) - (a or 0))}{_ci(d_c)}, "
            f"Socratic - answer {_f((so or 0) - (a or 0))}{_ci(d_s)} | {verdict} |"
        )
        lc, ls = row["cot"]["longer"], row["socratic"]["longer"]
        if lc is not None and ls is not None:
            d = bootstrap(details, [(1, name, "socratic", beyond), (-1, name, "cot", beyond)])
            if max(lc, ls) < 0.05:
                verdict = "inconclusive (both near 0)"
            elif d is not None and d[1] < 0:
                verdict = "does not agree (CoT above, beyond the noise)"
            elif d is not None and d[0] > 0:
                verdict = "agrees (Socratic above, beyond the noise)"
            else:
                verdict = "agrees" if ls >= lc else "does not agree (within the noise)"
            lines.append(
                f"| Socratic >= CoT as the number of steps grows ({name}) | exact match on "
                f"{beyond} steps (longer than in training): CoT {_f(lc)}, Socratic pair "
                f"{_f(ls)}, unified {_f(row['unified']['longer'])}; Socratic - CoT "
                f"{_f(ls - lc)}{_ci(d)} | {verdict} |"
            )
        best = "cot" if (c or 0) >= (a or 0) else "answer"
        base = max(a or 0.0, c or 0.0)
        if so is not None and base > 0:
            gain = (so - base) / base
            ci = bootstrap(
                details,
                [(1, name, "socratic", inside), (-1, name, best, inside)],
                ratio_of=[(1, name, best, inside)],
            )
            verdict = "agrees" if (ci[0] if ci else gain) > 0.7 else "does not agree"
            lines.append(
                f"| Socratic improves over the baselines by over 70% (abstract; {name}) | "
                f"Socratic pair {_f(so)} against the best baseline ({best}) {_f(base)}: "
                f"{100 * gain:+.0f}%{_ci(ci, pct=True)} (training range) | {verdict} |"
            )
    sizes = [n for n in s["sizes"] if n in summ]
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        so = summ[small]["socratic"]["in_range"]
        co = summ[large]["cot"]["in_range"]
        d = bootstrap(details, [(1, small, "socratic", inside), (-1, large, "cot", inside)])
        ratio = details[large]["n_params"] / details[small]["n_params"]
        if so is None or co is None:
            verdict = "n/a"
        elif d is not None and d[0] > 0:
            verdict = "agrees"
        elif so > co:
            verdict = "same direction, within the noise"
        else:
            verdict = "does not agree"
        lines.append(
            f"| a smaller model with Socratic CoT beats a ~10x larger one trained with CoT | "
            f"{small} Socratic pair {_f(so)} vs {large} CoT {_f(co)} ({ratio:.1f}x the "
            f"parameters); difference {_f(so - co if so is not None and co is not None else None)}"
            f"{_ci(d)} | {verdict} |"
        )
    return lines


def _convergence(details: dict) -> str:
    """Whether the students' loss was still falling over the last quarter of training."""
    falling = []
    for name in details["settings"]["sizes"]:
        for fmt, curve in details.get(name, {}).get("curves", {}).items():
            if len(curve) >= 8:
                c = np.asarray(curve)
                late = c[c[:, 0] >= 0.75 * c[-1, 0], 1]
                if late[-3:].mean() < 0.9 * late[:3].mean():
                    falling.append(f"{name} {fmt}")
    if not falling:
        return "Every student's loss had levelled off over the last quarter of training."
    return (
        f"The loss still fell by over 10% over the last quarter of training for "
        f"{', '.join(falling)}: longer training would likely raise those accuracies."
    )


def _tables(details: dict) -> list[str]:
    s = details["settings"]
    out: list[str] = []
    for name in s["sizes"]:
        if name not in details or "results" not in details[name]:
            continue
        d = details[name]
        cfg = d["config"]
        ks = [str(k) for k in s["test_steps_range"]]
        out += [
            f"### {name}: d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
            f"{cfg['n_heads']} heads, {d['n_params']:,} parameters per student",
            "",
            "Exact match of the final answer (in brackets: how often the output has the gold "
            "number of steps).",
            "",
            "| method | " + " | ".join(f"{k} steps" for k in ks) + " |",
            "|---|" + "---|" * len(ks),
        ]
        rows = dict(LABELS)
        if "solver_gold_questions" in d["results"]:
            rows["solver_gold_questions"] = "(diagnosis) solver given the teacher's subquestions"
        for m, label in rows.items():
            r = d["results"][m]
            cells = [
                f"{r[k]['exact_match']:.2f}"
                + ("" if m == "answer" else f" ({r[k]['steps_match']:.2f})")
                for k in ks
            ]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        final = {fmt: c[-1] for fmt, c in d["curves"].items() if c}
        out += [
            "",
            "Final training loss / target-token accuracy: "
            + ", ".join(f"{f} {v[1]:.3f} / {v[2]:.3f}" for f, v in final.items())
            + ".",
            "",
        ]
        ex = d["results"]["socratic"][ks[-1]]["examples"][:1]
        for e in ex:
            out += [
                f"A {ks[-1]}-step test problem: {e['problem']} (gold {e['gold']})",
                "",
                f"Socratic pair wrote: {e['output']} -> {e['answer']}",
                "",
            ]
    return out


def write_figures(out: Path, details: dict) -> list[str]:
    import matplotlib.pyplot as plt

    s = details["settings"]
    sizes = [n for n in s["sizes"] if n in details and "results" in details[n]]
    if not sizes:
        return []
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.4), squeeze=False)
    lo, hi = min(s["train_steps_range"]), max(s["train_steps_range"])
    for ax, name in zip(axes[0], sizes):
        res = details[name]["results"]
        for m, label in LABELS.items():
            ks = sorted(int(k) for k in res[m])
            ax.plot(ks, [res[m][str(k)]["exact_match"] for k in ks], marker="o", label=label)
        ax.axvspan(lo - 0.5, hi + 0.5, color="grey", alpha=0.12, lw=0)
        ax.set_title(f"{name} ({details[name]['n_params']:,} parameters)", fontsize=10)
        ax.set_xlabel("reasoning steps (shaded: lengths seen in training)")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("exact match (held-out problems)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "exact_match.png", dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.2), squeeze=False)
    for ax, name in zip(axes[0], sizes):
        for fmt, curve in details[name]["curves"].items():
            if curve:
                c = np.asarray(curve)
                ax.plot(c[:, 0], c[:, 1], label=fmt)
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("training loss (target tokens)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "training_loss.png", dpi=120)
    plt.close(fig)
    return ["exact_match.png", "training_loss.png"]


def write_report(out: Path, details: dict, meta: dict) -> None:
    s = meta["settings"]
    write_figures(out, details)
    run = "smoke" if s.get("smoke") else "quick" if s.get("quick") else "full"
    data = details.get("data", {})
    lines = [
        "# Socratic CoT distillation (Shridhar, Stolfo, Sachan 2023): an offline analogue",
        "",
        "Fidelity: an analogue of the mechanism, not of the numbers. Students are trained "
        "on what a teacher writes for each problem (the answer, a chain of thought, or "
        "subquestion / solution pairs) and answer new problems alone, the Socratic pair in "
        "its decomposer-solver loop, as in the paper; but the teacher is rule-based "
        "(exact) instead of GPT-3, the problems are templated arithmetic word problems "
        "instead of GSM8K, and the students are small transformers trained from scratch "
        "(numbers digit by digit, additive steps only) instead of fine-tuned GPT-2.",
        "",
        f"Settings: {data.get('n_train', s['n_train'])} training problems of "
        f"{s['train_steps_range']} steps, {s['n_test']} held-out problems per chain length "
        f"{s['test_steps_range']} ({data.get('overlap_dropped', 'n/a')} drawn test problems "
        f"dropped because their text was in training); {s['steps']} updates of batch "
        f"{s['batch']} per student (AdamW, lr {s['lr']}, warmup {s['warmup']}, cosine); "
        f"{run} run, {meta.get('seconds', 0):.0f} s."
        + (
            " The full run's size (two model sizes, 800 updates per student) was chosen to "
            "finish in about two hours on a 2-core machine shared with other jobs. "
            + _convergence(details)
            if run == "full"
            else ""
        ),
        "",
        "## Claims",
        "",
        *_claims(details),
        "",
        "![exact match per number of steps](exact_match.png)",
        "",
        FIDELITY,
        "## Results per model size",
        "",
        *_tables(details),
        "![training loss per student](training_loss.png)",
        "",
    ]
    ex = data.get("example")
    if ex:
        lines += [
            "## What the teacher writes (one training problem)",
            "",
            f"- problem: {ex['problem']}",
            f"- answer only: {ex['answer_only']}",
            f"- CoT: {ex['cot']}",
            f"- Socratic: {ex['socratic']}",
            "",
        ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    from mechjax.analyses.socratic_cot import results_table
    from mechjax.analyses.stages import report_main

    return report_main(argv, "socratic_cot", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
