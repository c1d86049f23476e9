"""report.md and figures of the coreference reproduction, every number read from
details.json.

    python -m mechjax.analyses.coreference.report DIR   # report.md, results.json again
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIDELITY = """\
## What this reproduces, and what it does not

- **Data.** LongtoNotes (OntoNotes documents merged back from their parts) needs the LDC
  OntoNotes licence and is not offline. The documents here are synthetic stories with a
  fixed number of people whose chains hold exactly `chain_length` mentions (names,
  pronouns, roles such as "the baker"), lengthened to a target number of tokens with
  sentences that mention nobody. Every pronoun is resolvable by recency and gender, and
  the text's own rule (string match, most recent entity of the pronoun's gender) recovers
  every chain: the `rule` column (CoNLL F1 1.0) checks that.
- **Mentions.** Gold mentions are given; only linking is scored (the paper's models also
  detect mentions).
- **Model.** No trained coreference model is offline. The predictor is a linear
  antecedent ranker over SmolLM2-135M's attention: for each mention, the attention from
  its last token to every earlier mention, per layer and head, plus a "new entity" score
  per mention kind; trained on the short documents only (the OntoNotes analogue), on as
  many documents of every length (the LongtoNotes analogue: the paper's two training sets
  hold the same text, so the amount of data is held equal here too), or on all training
  documents; decoded best-first.
- **Scores.** `mechjax.evals.coref`, equal to the official reference scorer on its
  published test cases: CoNLL F1 is the mean of the MUC, B-cubed and CEAF-e F1, summed
  over each cell's test documents before the ratios.
"""


def _f(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _cells(details: dict) -> list[tuple[str, int, int]]:
    out = []
    for name in details.get("cells", {}):
        c, t = name[1:].split("_t")
        out.append((name, int(c), int(t)))
    return sorted(out, key=lambda x: (x[1], x[2]))


def _f1(details: dict, pred: str, cell: str) -> float | None:
    r = details.get("results", {}).get(pred, {}).get(cell)
    return None if r is None else r["scores"]["conll"][2]


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def headline(details: dict) -> dict:
    """F1 of the short-trained and all-trained scorers on the shortest and longest
    documents (means over the chain lengths present at both ends)."""
    cells = _cells(details)
    if not cells:
        return {}
    short_len = min(t for _, _, t in cells)
    long_len = max(t for _, _, t in cells)
    chains = {c for _, c, t in cells if t == short_len} & {c for _, c, t in cells if t == long_len}
    out: dict = {"short_length": short_len, "long_length": long_len, "chains": sorted(chains)}
    for p in ("short_trained", "mixed_trained", "all_trained", "rule"):
        for tag, length in (("short", short_len), ("long", long_len)):
            out[f"{p}_{tag}"] = _mean(
                _f1(details, p, n) for n, c, t in cells if t == length and c in chains
            )
    by_chain = {}
    for c in sorted({c for _, c, _ in cells}):
        by_chain[c] = _mean(_f1(details, "all_trained", n) for n, cc, _ in cells if cc == c)
    out["all_trained_by_chain"] = by_chain
    return out


def _conll_from_counts(counts: dict, idx) -> float:
    """CoNLL F1 of the documents `idx` of a cell from their per-document counts."""
    f1s = []
    for m in ("muc", "bcub", "ceafe"):
        c = np.asarray(counts[m])[idx].sum(0)
        r = c[0] / c[1] if c[1] else 0.0
        p = c[2] / c[3] if c[3] else 0.0
        f1s.append(2 * r * p / (r + p) if r + p else 0.0)
    return float(np.mean(f1s))


def bootstrap(details: dict, terms: list[tuple[float, str, str]], n: int = 1000, seed: int = 0):
    """95% percentile interval of sum(weight * F1(pred, cell)) over `terms`, resampling
    each cell's test documents with replacement (cells independently). None without the
    per-document counts."""
    res = details.get("results", {})
    counts = {}
    for _, p, cell in terms:
        r = res.get(p, {}).get(cell)
        if r is None or "doc_counts" not in r:
            return None
        counts[(p, cell)] = r["doc_counts"]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        draws: dict[str, np.ndarray] = {}
        total = 0.0
        for w, p, cell in terms:
            k = len(counts[(p, cell)]["muc"])
            idx = draws.setdefault(cell, rng.integers(0, k, k))  # one draw per cell
            total += w * _conll_from_counts(counts[(p, cell)], idx)
        stats.append(total)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def distance_gap(details: dict, pred: str, n: int = 1000, seed: int = 0):
    """Antecedent accuracy at the farthest distance bin minus the nearest, pooled over every
    cell's test documents, with a 95% interval (documents resampled within cells)."""
    rows = details.get("results", {}).get(pred, {})
    per_cell = [np.asarray(r["distance_by_doc"], float) for r in rows.values()
                if "distance_by_doc" in r]  # fmt: skip
    if not per_cell:
        return None

    def gap(arrays):
        tot = sum(a.sum(0) for a in arrays)  # [bins, 2]
        if tot[0, 1] == 0 or tot[-1, 1] == 0:
            return np.nan
        return tot[-1, 0] / tot[-1, 1] - tot[0, 0] / tot[0, 1]

    rng = np.random.default_rng(seed)
    stats = [gap([a[rng.integers(0, len(a), len(a))] for a in per_cell]) for _ in range(n)]
    stats = np.asarray(stats)[np.isfinite(stats)]
    value = gap(per_cell)
    if not np.isfinite(value) or not stats.size:
        return None
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(value), (float(lo), float(hi))


def _verdict(x, ci) -> str:
    """The claim expects x > 0: agrees when the interval excludes 0 on that side."""
    if x is None:
        return "n/a"
    if ci is None:
        return "agrees" if x > 0 else "does not agree"
    if ci[0] > 0:
        return "agrees"
    if ci[1] < 0:
        return "does not agree (the opposite, beyond the noise)"
    return "same direction, within the noise" if x > 0 else "does not agree (within the noise)"


def _ci(ci) -> str:
    return "" if ci is None else f" [95% CI {ci[0]:+.3f}, {ci[1]:+.3f}]"


def _claims(details: dict) -> list[str]:
    h = headline(details)
    if not h:
        return []
    cells = _cells(details)
    ends = {
        tag: [n for n, c, t in cells if t == length and c in h["chains"]]
        for tag, length in (("short", h["short_length"]), ("long", h["long_length"]))
    }
    k_s, k_l = len(ends["short"]), len(ends["long"])
    drop_ci = bootstrap(
        details,
        [(1 / k_s, "short_trained", n) for n in ends["short"]]
        + [(-1 / k_l, "short_trained", n) for n in ends["long"]],
    ) if k_s and k_l else None  # fmt: skip
    gain_ci = bootstrap(
        details,
        [(1 / k_l, "mixed_trained", n) for n in ends["long"]]
        + [(-1 / k_l, "short_trained", n) for n in ends["long"]],
    ) if k_l else None  # fmt: skip
    drop = None
    if h["short_trained_short"] is not None and h["short_trained_long"] is not None:
        drop = h["short_trained_short"] - h["short_trained_long"]
    gain = None
    if h.get("mixed_trained_long") is not None and h["short_trained_long"] is not None:
        gain = h["mixed_trained_long"] - h["short_trained_long"]
    lines = ["| claim (paper) | paper | ours | verdict |", "|---|---|---|---|"]
    lines.append(
        "| a model trained on short (split) documents loses CoNLL F1 on long ones | "
        "77.4 (OntoNotes) -> 70.8 (LongtoNotes_s), span-based model | "
        f"{_f(h['short_trained_short'])} ({h['short_length']} tokens) -> "
        f"{_f(h['short_trained_long'])} ({h['long_length']} tokens), chains "
        f"{h['chains']}; drop {_f(drop)}{_ci(drop_ci)} | " + _verdict(drop, drop_ci) + " |"
    )
    sl = slopes(details).get("short_trained_length")
    if sl is not None:
        v, ci = sl
        lines.append(
            "| (the same, over every cell) F1 falls as documents lengthen | - | short-trained "
            f"scorer: {v:+.3f} CoNLL F1 per doubling of document length{_ci(ci)} | "
            + _verdict(-v, None if ci is None else (-ci[1], -ci[0]))
            + " |"
        )
    lines.append(
        "| training on long documents helps on long documents | 70.8 -> 71.5 | "
        f"short-trained {_f(h['short_trained_long'])} -> mixed-length-trained (as many "
        f"documents) {_f(h.get('mixed_trained_long'))}; gain {_f(gain)}{_ci(gain_ci)} "
        f"(all {details.get('n_train_docs', {}).get('all_trained', 'n/a')} training "
        f"documents: {_f(h['all_trained_long'])}) | " + _verdict(gain, gain_ci) + " |"
    )
    from mechjax.analyses.coreference import _distance_bins

    bins = _distance_bins()
    for p in ("short_trained", "mixed_trained"):
        g = distance_gap(details, p)
        if g is not None:
            v, ci = g
            lines.append(
                f"| (ours, the mechanism) links to distant antecedents fail more often | - | "
                f"{p.replace('_', ' ')} scorer: antecedent accuracy at {bins[-1][0]}+ words "
                f"minus at 0-{bins[0][1] - 1} words: {v:+.3f}{_ci(ci)} | "
                + _verdict(-v, (-ci[1], -ci[0]))
                + " |"
            )
    lines.append(
        "| the CoNLL scorers follow the reference scorer | (the official scorer) | "
        "equal on its 36 published test cases (91 values) and LEA on its authors' 34 "
        "(tests/test_evals_coref.py) | agrees |"
    )
    rule_ok = h["rule_short"] == 1.0 and h["rule_long"] == 1.0
    lines.append(
        "| (check) every chain is recoverable from the text | - | rule-based resolution "
        f"CoNLL F1 {_f(h['rule_short'])} / {_f(h['rule_long'])} | "
        + ("holds" if rule_ok else "does not hold")
        + " |"
    )
    return lines


def slope_terms(details: dict, pred: str, along: str) -> list[tuple[float, str, str]]:
    """Weights w such that sum(w * F1(cell)) is the least-squares slope of CoNLL F1 per
    doubling of document length (`along="length"`, one intercept per chain length) or of
    chain length (`along="chain"`, one intercept per document length)."""
    groups: dict[int, list[tuple[str, float]]] = {}
    for name, c, t in _cells(details):
        if _f1(details, pred, name) is None:
            continue
        key, x = (c, np.log2(t)) if along == "length" else (t, np.log2(c))
        groups.setdefault(key, []).append((name, float(x)))
    pairs = []
    for members in groups.values():
        if len(members) < 2:
            continue
        xs = np.asarray([x for _, x in members])
        pairs += [(name, x - xs.mean()) for (name, _), x in zip(members, xs)]
    ss = sum(d * d for _, d in pairs)
    return [(d / ss, pred, name) for name, d in pairs] if ss else []


def slopes(details: dict) -> dict:
    """The two slopes per predictor, with bootstrap intervals (None without counts)."""
    out = {}
    for pred in ("short_trained", "mixed_trained", "all_trained"):
        for along in ("length", "chain"):
            terms = slope_terms(details, pred, along)
            if terms:
                value = sum(w * (_f1(details, p, n) or 0.0) for w, p, n in terms)
                out[f"{pred}_{along}"] = (value, bootstrap(details, terms))
    return out


def trends(details: dict, pred: str = "all_trained") -> list[str]:
    """F1 against document length per chain length, and against chain length at the
    document length that holds the most chain lengths."""
    cells = _cells(details)
    lines = []
    for c in sorted({c for _, c, _ in cells}):
        pts = sorted((t, _f1(details, pred, n)) for n, cc, t in cells if cc == c)
        pts = [(t, f) for t, f in pts if f is not None]
        if len(pts) >= 2:
            path = " -> ".join(f"{f:.3f} ({t})" for t, f in pts)
            lines.append(f"- chains of {c}: F1 by document length (tokens): {path}")
    lengths = [t for _, _, t in cells]
    if lengths:
        best = max(set(lengths), key=lambda t: (lengths.count(t), t))
        pts = sorted((c, _f1(details, pred, n)) for n, c, t in cells if t == best)
        if len(pts) >= 2:
            path = " -> ".join(f"{f:.3f} ({c})" for c, f in pts if f is not None)
            lines.append(f"- documents of {best} tokens: F1 by chain length: {path}")
    sl = slopes(details)
    for p in ("short_trained", "mixed_trained", "all_trained"):
        parts = []
        for along, what in (("length", "document length"), ("chain", "chain length")):
            if f"{p}_{along}" in sl:
                v, ci = sl[f"{p}_{along}"]
                parts.append(f"{v:+.3f} per doubling of {what}{_ci(ci)}")
        if parts:
            lines.append(f"- {p.replace('_', ' ')} scorer, least-squares slopes over the cells: "
                         + "; ".join(parts))  # fmt: skip
    return lines


def _table(details: dict) -> list[str]:
    lines = [
        "| cell | chain | tokens | mentions | pronouns | short-trained | mixed-trained | "
        "all-trained | rule | MUC | B3 | CEAF-e | LEA | BLANC |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c, _ in _cells(details):
        st = details["cells"][name]["test"]
        r = details["results"]["all_trained"][name]["scores"]
        lines.append(
            f"| {name} | {c} | {st['tokens']:.0f} | {st['mentions']:.0f} | "
            f"{st['pronoun_share']:.2f} | {_f(_f1(details, 'short_trained', name))} | "
            f"{_f(_f1(details, 'mixed_trained', name))} | "
            f"{_f(_f1(details, 'all_trained', name))} | {_f(_f1(details, 'rule', name))} | "
            + " | ".join(_f(r[m][2]) for m in ("muc", "bcub", "ceafe", "lea", "blanc"))
            + " |"
        )
    return lines


def _accuracy(details: dict) -> list[str]:
    from mechjax.analyses.coreference import _distance_bins

    lines = ["| predictor | first mention (new) | name | pronoun | role | "
             + " | ".join(f"distance {lo}-{hi - 1}" if hi < 1_000_000 else f"distance {lo}+"
                        for lo, hi in _distance_bins()) + " |",
             "|---|---|---|---|---|" + "---|" * len(_distance_bins())]  # fmt: skip
    for p in ("short_trained", "mixed_trained", "all_trained"):
        rows = details.get("results", {}).get(p, {})
        if not rows:
            continue
        kinds = {}
        for k in ("first", "name", "pronoun", "role"):
            kinds[k] = _mean(r["antecedent_accuracy"][k] for r in rows.values())
        dist = _pooled_distance(rows)
        lines.append(
            f"| {p} | "
            + " | ".join(_f(kinds[k]) for k in ("first", "name", "pronoun", "role"))
            + " | "
            + " | ".join(_f(x) for x in dist)
            + " |"
        )
    return lines


def _pooled_distance(rows: dict) -> list[float | None]:
    """Antecedent accuracy per distance bin, pooled over cells (weighted by counts)."""
    n_bins = len(next(iter(rows.values()))["n_by_distance"])
    hits, totals = np.zeros(n_bins), np.zeros(n_bins)
    for r in rows.values():
        for b in range(n_bins):
            n = r["n_by_distance"][b]
            if n and r["accuracy_by_distance"][b] is not None:
                hits[b] += r["accuracy_by_distance"][b] * n
                totals[b] += n
    return [float(h / n) if n else None for h, n in zip(hits, totals)]


def write_figures(out: Path, details: dict) -> list[str]:
    """conll_f1.png (F1 against document length, a line per chain length) and
    head_weights.png (the all-length scorer's weight per layer and head)."""
    import matplotlib.pyplot as plt

    cells = _cells(details)
    if not cells:
        return []
    names = []
    preds = ("short_trained", "mixed_trained", "all_trained")
    fig, axes = plt.subplots(1, len(preds), figsize=(13, 3.4), sharey=True)
    for ax, p in zip(axes, preds):
        for c in sorted({c for _, c, _ in cells}):
            pts = [(t, _f1(details, p, n)) for n, cc, t in cells if cc == c]
            pts = [(t, f) for t, f in pts if f is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"chain {c}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("document length (tokens)")
        ax.set_title(p.replace("_", " "), fontsize=10)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("CoNLL F1 (test documents)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "conll_f1.png", dpi=120)
    plt.close(fig)
    names.append("conll_f1.png")
    w = details.get("head_weights", {}).get("all_trained")
    if w is not None:
        w = np.asarray(w)
        fig, ax = plt.subplots(figsize=(4.5, 5))
        lim = float(np.abs(w).max()) or 1.0
        im = ax.imshow(w, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title("antecedent scorer weight\n(per unit of log attention)", fontsize=9)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(out / "head_weights.png", dpi=120)
        plt.close(fig)
        names.append("head_weights.png")
    return names


def write_report(out: Path, details: dict, meta: dict) -> None:
    s = meta["settings"]
    run = "smoke" if s.get("smoke") else "quick" if s.get("quick") else "full"
    lines = [
        "# Coreference in long documents (LongtoNotes, Shridhar et al. 2022): an analogue",
        "",
        "Fidelity: an offline analogue of the measurement, not of the numbers. LongtoNotes "
        "and OntoNotes are licensed and no trained coreference model is offline; here "
        "synthetic stories with chains of controlled length (gold mentions given) are "
        f"resolved by a linear antecedent ranker over {s['model']}'s attention, and scored "
        "with CoNLL scorers equal to the official reference scorer on its test cases. "
        "The paper's corpus statistics and model scores are quoted, not re-measured.",
        "",
        f"Settings: {s['n_entities']} entities per document, chain lengths {s['chains']}, "
        f"document lengths {s['lengths']} tokens (cells where the chains fit), "
        f"{s['n_train']} training and {s['n_test']} test documents per cell; short training "
        f"set: documents of at most {s['short_max']} tokens "
        f"({details.get('n_train_docs', {}).get('short_trained', 'n/a')} documents; the "
        "mixed set as many, taken in turn from every cell; "
        f"{details.get('n_train_docs', {}).get('all_trained', 'n/a')} in all); "
        f"{run} run, {meta.get('seconds', 0):.0f} s"
        + (
            f" (the attention features of {len(details['features_from_cache'])} cells were "
            "read from an earlier run's cache, so this time leaves out reading them)."
            if details.get("features_from_cache")
            else "."
        )
        + (
            " The full run's size (6 + 6 documents per cell, documents up to 1024 tokens) "
            "was chosen to finish in about an hour and a half on a 2-core machine shared "
            "with other jobs: reading one 1024-token document through SmolLM2 took about a "
            "minute there. With 6 test documents per cell a cell's F1 is noisy (a few "
            "hundredths); the trends across cells are the result."
            if run == "full"
            else ""
        ),
        "",
        "## Claims",
        "",
        *_claims(details),
        "",
        FIDELITY,
        "## How F1 changes with document and chain length (all-length scorer)",
        "",
        *trends(details),
        "",
        "## CoNLL F1 per cell (test documents)",
        "",
        "MUC to BLANC: F1 of the all-length scorer.",
        "",
        *_table(details),
        "",
        "![CoNLL F1 against document length](conll_f1.png)",
        "",
        "## Antecedent accuracy",
        "",
        "Per mention kind (mean over cells) and per distance in words to the previous "
        "mention of the same entity (pooled); a first mention is right when it opens a new "
        "entity, a later one when its predicted antecedent is in its chain.",
        "",
        *_accuracy(details),
        "",
    ]
    w = details.get("head_weights", {}).get("all_trained")
    if w is not None:
        w = np.asarray(w)
        top = np.argsort(w.ravel())[::-1][:5]
        heads = ", ".join(f"L{i // w.shape[1]}H{i % w.shape[1]} ({w.ravel()[i]:+.2f})" for i in top)
        lines += [
            "The all-length ranker's largest positive weights (per unit of log attention) sit "
            f"on heads {heads}: attention from a mention to an earlier mention there is the "
            "evidence of coreference it relies on most.",
            "",
        ]
    if (out / "head_weights.png").exists():
        lines += ["![scorer weights per layer and head](head_weights.png)", ""]
    ex = details.get("example")
    if ex:
        lines += ["## An example test document", "", "> " + ex["text"][:1200], ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    from mechjax.analyses.coreference import results_table
    from mechjax.analyses.stages import report_main

    def write(out, details, meta):
        write_figures(out, details)
        write_report(out, details, meta)

    return report_main(argv, "coreference", write, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
