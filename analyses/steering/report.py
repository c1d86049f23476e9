"""report.md of the steering reproduction: fidelity first, the paper's claims and ours
side by side (every number read from details.json), then the tables per model.

    python -m mechjax.analyses.steering.report DIR   # DIR/report.md, results.json from details.json
"""

from __future__ import annotations

from pathlib import Path

CONDITIONS = ("no_instr", "instr", "steer", "instr_steer")

FIDELITY = """\
## What this reproduces, and what it does not

- **Models.** SmolLM2-135M-Instruct (an instruction-tuned model; its chat template wraps
  the prompts) and Gemma 3 270M. The Gemma 3 GGUF is the **base** model (its metadata
  names no instruction tuning and it has no chat template), so it is prompted as the
  paper prompts base models, `Q: ...\\nA:`. The paper used Phi-3, Gemma 2 2B/9B and
  Mistral 7B: models 25-60x larger than ours.
- **Vectors.** About 32 pairs per instruction, built from the shipped files: instruction-free
  IFEval queries whose key is not an evaluation key, with and without an instruction
  sentence of that id. The paper's augmented set (every query x every instruction) is
  not available offline.
- **Layer search.** The paper's candidates `range(L // 5, L, 2)` and "no steering", on
  held-out validation queries without the instruction, IFEval strict scoring, a layer
  zeroed if any output is degenerate. Degenerate = perplexity under the unsteered model
  (given the prompt) below 1.3. The paper uses GPT-2's perplexity below 2.5, which is not
  available offline; a model's own greedy text is far more predictable to itself, so the
  threshold is lower.
- **Generation.** Greedy, {max_new} new tokens. The paper generates long answers; some
  instructions (sections, bullet lists, JSON) are harder to satisfy in {max_new} tokens.
- **Checkers.** `mechjax.steering.ifeval`, our own IFEval-style checkers: the language
  instruction and the English part of the case instructions are not checked (no
  offline language identifier); sentences are split by a regular expression.
- **Length and keywords.** `add_vector` at about 3/8 (length) and 3/4 (keywords) of the
  depth, the paper's layers 12 and 24 of 32; weights are multiples of the vector's norm,
  the keyword weight chosen on half the examples and measured on the other half.
- **Not done.** Cross-model steering (vectors from an instruction-tuned model applied to
  its base model): no base/instruct pair of one model is available offline.
"""


def results_table(details: dict, models) -> dict:
    """The issue's results.json layout: model -> instruction id -> the four adherences
    and the layer."""
    out: dict = {}
    for name in models:
        r = details[name]
        rows = {iid: {c: v[c] for c in (*CONDITIONS, "layer")} for iid, v in r["format"].items()}
        for kind in ("include", "exclude"):
            if f"keywords_{kind}" in r:
                k = r[f"keywords_{kind}"]
                iid = "keywords:existence" if kind == "include" else "keywords:forbidden_words"
                rows[iid] = {c: k[c] for c in (*CONDITIONS, "layer")}
        out[name] = rows
    return out


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _claims(name: str, r: dict) -> list[str]:
    fmt = r["format"]
    ids = sorted(fmt)
    up = [i for i in ids if fmt[i]["steer"] > fmt[i]["no_instr"]]
    big = [i for i in ids if fmt[i]["steer"] - fmt[i]["no_instr"] >= 0.2]
    ge = [i for i in ids if fmt[i]["instr_steer"] >= fmt[i]["instr"]]
    mean = lambda k: sum(fmt[i][k] for i in ids) / max(1, len(ids))  # noqa: E731
    lines = [
        f"| Steering raises adherence without the instruction ({name}) | "
        f"steer > no instruction for {len(up)} of {len(ids)} format instructions; mean "
        f"{mean('no_instr'):.2f} -> {mean('steer'):.2f}; a rise of at least 20 points for "
        f"{len(big)} ({', '.join(big) or 'none'}) | {'yes' if len(up) > len(ids) / 2 else 'no'} |",
        f"| Steering plus the instruction at least matches the instruction alone ({name}) | "
        f"instr+steer >= instr for {len(ge)} of {len(ids)}; mean {mean('instr'):.2f} -> "
        f"{mean('instr_steer'):.2f} | {'yes' if len(ge) > len(ids) / 2 else 'no'} |",
    ]
    if "length" in r:
        ln = r["length"]
        pairs = ", ".join(f"a={a:g}: {w:.1f}" for a, w in zip(ln["alphas"], ln["mean_words"]))
        zero = ln["mean_words"][ln["alphas"].index(0.0)] if 0.0 in ln["alphas"] else None
        top = ln["mean_words"][-1]
        ok = zero is not None and top < zero
        lines.append(
            f"| The conciseness vector shortens answers as w grows ({name}) | mean words "
            f"{pairs} (w = a x |u|) | {'yes' if ok else 'no'} |"
        )
    for kind, iid in (("include", "keywords:existence"), ("exclude", "keywords:forbidden_words")):
        k = r.get(f"keywords_{kind}")
        if k:
            lines.append(
                f"| Keyword {kind} steering raises adherence without the instruction ({name}) | "
                f"{iid}: no instruction {k['no_instr']:.2f} -> steer {k['steer']:.2f}; instr "
                f"{k['instr']:.2f} -> instr+steer {k['instr_steer']:.2f} | "
                f"{'yes' if k['steer'] > k['no_instr'] else 'no'} |"
            )
    c = r.get("composition")
    if c:
        lines.append(
            f"| Composed vectors each still work ({name}) | lowercase alone "
            f"{c['format']['lowercase']:.2f} vs with length {c['both']['lowercase']:.2f}; words "
            f"length alone {c['length']['mean_words']:.1f} vs with lowercase "
            f"{c['both']['mean_words']:.1f} (none: {c['none']['mean_words']:.1f}) | "
            f"{'yes' if c['both']['mean_words'] < c['none']['mean_words'] and c['both']['lowercase'] >= c['format']['lowercase'] - 0.1 else 'no'} |"
        )
    return lines


def _subset_note(r: dict) -> list[str]:
    from mechjax.analyses.steering import _instruction_ids

    every = _instruction_ids({"instructions": None})
    run = sorted(r["format"])
    if set(every) <= set(run):
        return []
    missing = [i for i in every if i not in run]
    return [
        f"{len(run)} of the {len(every)} checkable format instructions were run for this "
        f"model; not run: {', '.join(f'`{i}`' for i in missing)}.",
        "",
    ]


def _model_section(name: str, r: dict) -> list[str]:
    out = [
        f"## {name}",
        "",
        f"{r['n_layers']} layers; prompts through the {r['template']} template"
        f" ({'instruction-tuned' if r['instruction_tuned'] else 'base model'}).",
        "",
        "### Format instructions (adherence, IFEval strict)",
        "",
        *_subset_note(r),
        "| instruction | n | no instr | instr | steer | instr + steer | layer | validation accuracy by layer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for iid, v in sorted(r["format"].items()):
        s = v["search"]
        by = ", ".join(
            f"{'none' if c is None else c}:{a:.2f}{'*' if d else ''}"
            for c, a, d in zip(s["candidates"], s["accuracy"], s["degenerate"])
        )
        out.append(
            f"| `{iid}` | {v['n_eval']} | {_f(v['no_instr'])} | {_f(v['instr'])} | "
            f"{_f(v['steer'])} | {_f(v['instr_steer'])} | {v['layer']} | {by} |"
        )
    out += ["", "`*`: a degenerate output at that layer (scored 0 in the search).", ""]
    if "length" in r:
        ln = r["length"]
        out += [
            f"### Length (add_vector at layer {ln['layer']}, |u| = {ln['vector_norm']:.3f}, "
            f"{ln['n']} queries)",
            "",
            "| a (w = a x |u|) | w | mean words | mean sentences | degenerate fraction |",
            "|---|---|---|---|---|",
        ]
        for a, w, mw, ms, dg in zip(
            ln["alphas"],
            ln["weights"],
            ln["mean_words"],
            ln["mean_sentences"],
            ln["degenerate_fraction"],
        ):
            out.append(f"| {a:g} | {w:.3f} | {mw:.1f} | {ms:.1f} | {dg:.2f} |")
        out.append("")
    for kind in ("include", "exclude"):
        k = r.get(f"keywords_{kind}")
        if not k:
            continue
        v = k["validation"]
        out += [
            f"### Keywords, {kind} (add_vector at layer {k['layer']}, weight {k['alpha']:g} x |u| "
            f"chosen on validation: {', '.join(f'{a:g}: {s:.2f}' for a, s in zip(v['alphas'], v['steer_accuracy']))})",
            "",
            "| n | no instr | instr | steer | instr + steer |",
            "|---|---|---|---|---|",
            f"| {k['n_eval']} | {_f(k['no_instr'])} | {_f(k['instr'])} | {_f(k['steer'])} | "
            f"{_f(k['instr_steer'])} |",
            "",
        ]
    c = r.get("composition")
    if c:
        out += [
            f"### Composition: lowercase (adjust_rs, layer {c['format_layer']}) + length "
            f"(add_vector, layer {c['length_layer']}, a = {c['length_alpha']:g}), {c['n']} queries "
            "without the instruction",
            "",
            "| steering | lowercase adherence | mean words |",
            "|---|---|---|",
        ]
        for key in ("none", "format", "length", "both"):
            out.append(f"| {key} | {c[key]['lowercase']:.2f} | {c[key]['mean_words']:.1f} |")
        out.append("")
    ex = r["format"].get("change_case:english_lowercase")
    if ex:
        out += ["### Example outputs (`change_case:english_lowercase`, first evaluation query)", ""]
        for cond in CONDITIONS:
            text = (ex["examples"][cond][0] if ex["examples"][cond] else "").replace("\n", " ")
            out.append(f"- **{cond}**: {text[:300]!r}")
        out.append("")
    return out


def write_figures(out: Path, details: dict, models) -> list[str]:
    """Per model: adherence in the four conditions per instruction (bars) and the layer
    search's validation accuracy by layer (lines). Returns the file names."""
    import numpy as np

    from mechjax import plotting

    names = []
    for name in models:
        fmt = details[name]["format"]
        ids = sorted(fmt)
        if not ids:
            continue
        fig, ax = plotting.subplots(figsize=(max(6.0, 0.9 * len(ids) + 2), 3.8))
        x = np.arange(len(ids))
        for j, cond in enumerate(CONDITIONS):
            ax.bar(x + (j - 1.5) * 0.2, [fmt[i][cond] for i in ids], 0.2, label=cond)
        ax.set_xticks(x, [i.split(":")[1] for i in ids], rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("adherence (IFEval strict)")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name}: format instructions", fontsize=9)
        ax.legend(fontsize=7, ncol=4)
        fig.tight_layout()
        path = f"{name}_adherence.png"
        fig.savefig(out / path, dpi=110)
        names.append(path)
        fig, ax = plotting.subplots(figsize=(6.0, 3.8))
        for i in ids:
            srch = fmt[i]["search"]
            layers = [c for c in srch["candidates"] if c is not None]
            acc = [a for c, a in zip(srch["candidates"], srch["accuracy"]) if c is not None]
            ax.plot(layers, acc, marker=".", label=i.split(":")[1])
        ax.set_xlabel("steered layer (adjust_rs)")
        ax.set_ylabel("validation accuracy, no instruction")
        ax.set_title(f"{name}: layer search", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        path = f"{name}_layer_search.png"
        fig.savefig(out / path, dpi=110)
        names.append(path)
    return names


def write_report(out: Path, details: dict, meta: dict) -> Path:
    settings = meta["settings"]
    models = [m for m in settings["models"] if m in details]
    lines = [
        "# Reproduction: Improving Instruction-Following through Activation Steering",
        "",
        "Stolfo, Balachandran, Yousefi, Horvitz, Nushi (ICLR 2025). Run: "
        f"`mechjax reproduce steering{' --quick' if settings.get('quick') else ''}` "
        f"({meta.get('seconds', 0):.0f} s on CPU){' — smoke run, numbers not meaningful' if settings.get('smoke') else ''}.",
        "",
        *([f"How it ran: {details['runs']}", ""] if details.get("runs") else []),
        FIDELITY.format(max_new=settings["max_new_tokens"]),
        "## The paper's claims and ours",
        "",
        "| claim (paper) | ours | agrees? |",
        "|---|---|---|",
    ]
    for name in models:
        lines += _claims(name, details[name])
    lines.append("")
    for name in models:
        lines += _model_section(name, details[name])
    figures = write_figures(out, details, models)
    if figures:
        lines += ["## Figures", "", *[f"![{f[:-4]}]({f})" for f in figures], ""]
    lines += [
        "## Files",
        "",
        "- `results.json`: model -> instruction id -> `no_instr`, `instr`, `steer`, "
        "`instr_steer`, `layer`.",
        "- `details.json`: every stage (layer-search scores, perplexities, length and keyword "
        "sweeps, composition, example outputs, settings, stage timings).",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    """`python -m mechjax.analyses.steering.report DIR`: report.md and results.json again."""
    from mechjax.analyses.stages import report_main

    return report_main(argv, "steering", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
