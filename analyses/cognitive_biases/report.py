"""report.md of the cognitive-biases reproduction: what it reproduces and what not, the
paper's claims and ours side by side (every number read from details.json), the tables
per model and prompting mode, the digit-level transformer, and the figures.

    python -m mechjax.analyses.cognitive_biases.report DIR   # report.md, results.json again
"""

from __future__ import annotations

from pathlib import Path

FIDELITY = """\
## What this reproduces, and what it does not

- **Problems.** Pairs from the project's own MathWorld-style generator
  (`mechjax.evals.biases`, following the paper's design: a world model of agents,
  entities and quantities rendered through templates). The paper then paraphrases every
  problem with an LLM; there is no paraphrase model offline, so the problems are the
  template renderings (the paper's "consistent body" columns), and the paper's CSVs are
  not redistributable. Consistency and transfer/comparison pairs have one operation here
  (the paper's are longer): two-operation problems leave models of this size at the floor,
  where no contrast can show. Carry pairs are one 3-digit addition or subtraction with the
  same result, with no carry/borrow (a) or with one or two (b).
- **Prompting.** The paper's evaluation script: the direct prompt `Q: ...\\nA: The answer
  (arabic numerals) is `, greedy, 16 new tokens, the first number of the continuation is
  the answer; and zero-shot chain of thought in two stages (reasoning, then "Therefore,
  the answer (arabic numerals) is "), on a subset of the pairs. An answer without a number
  is wrong and counted ("unparsed").
- **Statistics.** Accuracy per condition, the paired t-test on the per-item 0/1 vectors
  (the paper's `ttest_rel`) and McNemar's exact test beside it.
- **Models.** SmolLM2-135M-Instruct and Gemma 3 270M (base), plain-text prompts, where
  the paper tests LLaMA 2 (7B-70B), Mistral, Mixtral and GPT-3.5/4-class models.
- **Theory hook.** A 2-layer digit-level transformer trained here from scratch with
  `mechjax.training` on 3-digit additions and subtractions (test pairs held out), tested on
  the language models' carry pairs (the same generator and seed, 500 of them): the
  paper's discussion expects a from-scratch model to show the carry effect that the
  pretrained models lack. Its accuracy is measured at several points along training,
  because the answer depends on when one looks: the training length (1,500 steps) was
  set after a first 4,000-step run reached 100% on both conditions from step 2,400 on,
  where no effect can show; nothing else was chosen by looking at the results.
"""

CLAIMS = {
    "consistency": "LMs are more accurate on consistent than on inconsistent comparison "
    "wording (human-like text-comprehension bias)",
    "transfer_comparison": "LMs are more accurate on transfers than on comparisons "
    "(human-like solution-planning bias)",
    "carry": "LMs show **no** carry effect: unlike children, problems with carries are not harder",
}


def _f(x, nd: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _verdict(r: dict, alpha: float = 0.05) -> str:
    d = r["acc_a"] - r["acc_b"]
    p = r["p_value"]
    if p != p:  # nan: no variation
        return "no difference measurable (identical outcomes)"
    sig = p < alpha
    if not sig:
        return f"no significant difference (Δ {100 * d:+.1f} points, p = {_f(p, 2)})"
    side = "a > b" if d > 0 else "b > a"
    return f"significant, {side} (Δ {100 * d:+.1f} points, p = {_f(p, 2)})"


def _claims(details: dict, models) -> list[str]:
    lines = [
        "| test | claim (paper) | ours (direct) | ours (chain of thought) |",
        "|---|---|---|---|",
    ]
    for test, claim in CLAIMS.items():
        for m in models:
            d = details[m]
            direct = d["direct"].get(test)
            cot = d.get("cot", {}).get(test)
            if direct is None:
                continue
            lines.append(
                f"| {test} | {claim} | **{m}**: {_pct(direct['acc_a'])} vs "
                f"{_pct(direct['acc_b'])}, {_verdict(direct)} | "
                + (f"{_pct(cot['acc_a'])} vs {_pct(cot['acc_b'])}, {_verdict(cot)}" if cot else "")
                + " |"
            )
    dm = details.get("digit_transformer")
    if dm:
        mid = ""
        curve = [c for c in dm.get("curve") or [] if "p_mcnemar" in c]
        if curve:
            c = max(curve, key=lambda c: c["acc_a"] - c["acc_b"])
            mid = (
                f"; while it learns, the largest gap is at step {c['step']}: "
                f"{_pct(c['acc_a'])} vs {_pct(c['acc_b'])} (McNemar p = {_f(c['p_mcnemar'], 2)})"
            )
        lines.append(
            "| carry | (discussion) a from-scratch digit-level transformer will likely show a "
            f"carry effect | **digit transformer**, trained: {_pct(dm['acc_a'])} without "
            f"carries vs {_pct(dm['acc_b'])} with, {_verdict(dm)}{mid} | |"
        )
    floor = [
        m
        for m in models
        if max(max(r["acc_a"], r["acc_b"]) for r in details[m]["direct"].values()) < 0.1
    ]
    if floor:
        lines.append(
            "| (context) | the tests need models that solve many of the problems | "
            f"**{', '.join(floor)}**: below 10% on every test and condition (direct), so "
            "no contrast can show; the absence of significant differences here says nothing "
            "about the biases | |"
        )
    return lines


def _table(rows: dict) -> list[str]:
    lines = [
        "| test | n | acc a | acc b | paired t p | McNemar p | only a right | only b right "
        "| unparsed a / b |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for test, r in rows.items():
        lines.append(
            f"| {test} | {r['n']} | {_pct(r['acc_a'])} | {_pct(r['acc_b'])} | "
            f"{_f(r['p_value'], 2)} | {_f(r['p_mcnemar'], 2)} | {r['only_a']} | {r['only_b']} | "
            f"{r['n_unparsed_a']} / {r['n_unparsed_b']} |"
        )
    return lines


def _carry_split(rows: dict) -> list[str]:
    r = rows.get("carry", {})
    ks = sorted(k for k in r if k.startswith("carries_"))
    if not ks:
        return []
    cells = [
        f"{k.split('_')[1]} carr{'y' if k.endswith('_1') else 'ies'}: {_pct(r[k]['acc_a'])} vs "
        f"{_pct(r[k]['acc_b'])} (n {r[k]['n']})"
        for k in ks
    ]
    return ["Carry pairs by number of carries (a vs b): " + "; ".join(cells) + ".", ""]


def _examples(rows: dict) -> list[str]:
    lines = []
    for test, r in rows.items():
        for e in r.get("examples", [])[:1]:
            lines += [
                f"- {test}, a: {e['a']!r} -> {e['pred_a']} (gold {e['answer']})",
                f"- {test}, b: {e['b']!r} -> {e['pred_b']} (gold {e['answer']})",
            ]
    return lines


def _digit_section(dm: dict) -> list[str]:
    s = dm.get("settings", {})
    lines = [
        "## Digit-level transformer (trained here)",
        "",
        f"{s.get('n_layers', '?')} layers, d_model {s.get('d_model', '?')}, "
        f"{s.get('steps', '?')} training steps, {dm['n']} held-out carry pairs, "
        f"{dm.get('seconds', 0):.0f} s. Final: {_pct(dm['acc_a'])} without carries, "
        f"{_pct(dm['acc_b'])} with (paired t p = {_f(dm['p_value'], 2)}, McNemar p = "
        f"{_f(dm['p_mcnemar'], 2)}); training accuracy {_pct(dm.get('train_accuracy'))}.",
        "",
    ]
    for key, label in (("by_op", "operation"), ("by_carries", "carries")):
        part = dm.get(key) or {}
        if part:
            lines.append(
                f"By {label}: "
                + "; ".join(
                    f"{k}: {_pct(v['acc_a'])} vs {_pct(v['acc_b'])} (n {v['n']})"
                    for k, v in part.items()
                )
                + "."
            )
    curve = dm.get("curve") or []
    if curve:
        lines += [
            "",
            "| step | loss (test) | acc a (no carry) | acc b (carries) | McNemar p |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['step']} | {_f(c.get('loss'))} | {_pct(c['acc_a'])} | {_pct(c['acc_b'])} | "
            f"{_f(c.get('p_mcnemar'), 2)} |"
            for c in curve
        ]
    return [*lines, ""]


def write_figures(out: Path, details: dict, models) -> list[str]:
    """Accuracy per condition for every model and test (direct), and the digit model's
    curve over training."""
    from mechjax import plotting

    names = []
    models = [m for m in models if details.get(m, {}).get("direct")]
    if models:
        tests = list(details[models[0]]["direct"])
        fig, axes = plotting.subplots(1, len(tests), figsize=(3.0 * len(tests), 3.0))
        for ax, test in zip(list(axes), tests):
            for i, m in enumerate(models):
                r = details[m]["direct"][test]
                ax.bar([i - 0.2, i + 0.2], [r["acc_a"], r["acc_b"]], 0.4, color=["C0", "C1"])
            ax.set_xticks(range(len(models)))
            ax.set_xticklabels(models, fontsize=7)
            ax.set_title(f"{test} (a blue, b orange)", fontsize=8)
            ax.set_ylim(0, 1)
        axes[0].set_ylabel("accuracy (direct)")
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=110)
        names.append("accuracy.png")
    curve = (details.get("digit_transformer") or {}).get("curve")
    if curve:
        fig, ax = plotting.subplots(figsize=(5.0, 3.2))
        steps = [c["step"] for c in curve]
        ax.plot(steps, [c["acc_a"] for c in curve], marker=".", label="no carry (a)")
        ax.plot(steps, [c["acc_b"] for c in curve], marker=".", label="1-2 carries (b)")
        ax.set_xlabel("training step")
        ax.set_ylabel("exact-match accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title("Digit-level transformer on carry pairs", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "digit_transformer.png", dpi=110)
        names.append("digit_transformer.png")
    return names


def write_report(out: Path, details: dict, meta: dict) -> Path:
    settings = meta["settings"]
    models = [m for m in settings["models"] if m in details]
    smoke = " — smoke run, numbers not meaningful" if settings.get("smoke") else ""
    lines = [
        "# Reproduction: Do Language Models Exhibit the Same Cognitive Biases in Problem "
        "Solving as Human Learners?",
        "",
        "Opedal, Stolfo et al. (ICML 2024). Run: "
        f"`mechjax reproduce cognitive-biases{' --quick' if settings.get('quick') else ''}` "
        f"({meta.get('seconds', 0):.0f} s on CPU){smoke}; {settings['n']} pairs per test "
        f"(direct), {settings['n_cot']} with chain of thought.",
        "",
        FIDELITY,
        "## The paper's claims and ours",
        "",
        *_claims(details, models),
        "",
    ]
    for m in models:
        for mode in ("direct", "cot"):
            rows = details[m].get(mode)
            if rows:
                title = "direct prompting" if mode == "direct" else "zero-shot chain of thought"
                lines += [f"## {m}, {title}", "", *_table(rows), "", *_carry_split(rows)]
                lines += ["Examples:", "", *_examples(rows), ""]
    if details.get("digit_transformer"):
        lines += _digit_section(details["digit_transformer"])
    figures = write_figures(out, details, models)
    if figures:
        lines += ["## Figures", "", *[f"![{f[:-4]}]({f})" for f in figures], ""]
    lines += [
        "## Files",
        "",
        "- `results.json`: model -> `consistency`, `transfer_comparison`, `carry` -> `acc_a`, "
        "`acc_b`, `p_value` (paired t), `n` (direct prompting; chain of thought under `cot`); "
        "`digit_transformer` -> `carry`.",
        "- `details.json`: every test, mode and model with McNemar's p, discordant counts, "
        "unparsed answers and examples; the digit model's settings and curve; stage timings.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    """`python -m mechjax.analyses.cognitive_biases.report DIR`: report.md and results.json again."""
    from mechjax.analyses.cognitive_biases import results_table
    from mechjax.analyses.stages import report_main

    return report_main(argv, "cognitive_biases", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
