"""report.md of the DAS reproduction: fidelity first, the paper's claims and ours side by
side (every number read from details.json), the IIA tables per model and variable, and the
figure (IIA per layer, one panel per model and variable).

    python -m mechjax.analyses.das.report DIR   # report.md, results.json again
"""

from __future__ import annotations

from pathlib import Path

FIDELITY = """\
## What this reproduces, and what it does not

- **Method.** MIB's causal-variable track as the paper defines it: a featurizer at a site,
  interchange interventions that swap the variable's features from a source into a base
  prompt, IIA on held-out pairs against the causal model's counterfactual output. DAS
  learns k orthonormal directions (a QR-parametrised rotation) by cross-entropy against
  the counterfactual label; boundless DAS learns a sigmoid mask over a full rotation,
  differential binary masking (DBM) a sigmoid mask over neurons, both with an annealed
  temperature and a small sparsity penalty, the mask logits at their own learning rate
  (`mask_lr`, as boundless DAS trains its boundaries faster than its rotation); PCA takes the top-k components of the
  training bases' activations at the intervened position, untrained.
- **Site.** `resid_pre` of a layer at the last token, where the answer is produced. MIB
  also searches token positions and other components; this run does not.
- **Tasks and models.** MIB's IOI dataset, and its models (GPT-2, Qwen2.5, Gemma 2,
  Llama 3.1), are not offline. The IOI pairs are rebuilt from the causal model (one
  template, names from the IOI name list), on SmolLM2-135M and Gemma 3 270M, and only
  pairs whose base prompt the model answers right are kept. MIB scores IOI variables with
  a logit-difference MSE; here IIA is argmax accuracy against the counterfactual token.
- **SAE features.** MIB uses SAEs released for its models at every layer. None exist
  offline for these models, and training one per layer is out of reach on this machine,
  so SAE features are compared with neurons and DAS at the one site where an SAE was
  trained with `mechjax sae train` (`--sae DIR`), with a learned mask over its latents
  (MIB's differential masking on SAE features); without `--sae` the comparison is not
  run.
- **Toy model.** A small transformer trained with `mechjax.training` where the variable's
  site is known by construction (see `toy.py`): the check that DAS finds a variable where
  one is, and not where none can be.
"""


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _best(row: dict, f: str, layers) -> tuple[float | None, int | None]:
    xs = row.get(f)
    if not xs:
        return None, None
    i = max(range(len(xs)), key=lambda j: xs[j])
    return xs[i], layers[i]


def _claims(details: dict, models) -> list[str]:
    from mechjax.analyses.das import FEATURIZERS, VARIABLES

    lines = ["| claim (paper) | ours |", "|---|---|"]
    toy = details.get("toy") or {}
    if toy:
        lines.append(
            "| DAS finds a variable at its site (IIA near 1 there, near chance elsewhere) | "
            f"toy model: right site {_f(toy.get('iia_right_site'))}, wrong site "
            f"{_f(toy.get('iia_wrong_site'))}, wrong variable "
            f"{_f(toy.get('iia_wrong_variable'))} |"
        )
    for m in models:
        if m not in details:
            continue
        layers = details[m]["layers"]
        for _, var in VARIABLES:
            row = details[m].get(var)
            if not row:
                continue
            best = {f: _best(row, f, layers) for f in FEATURIZERS}
            done = {f: v for f, v in best.items() if v[0] is not None}
            if not done:
                continue
            top = max(done, key=lambda f: done[f][0])
            verdict = "agrees" if top == "das" else f"does not agree: {top} is best"
            parts = ", ".join(f"{f} {_f(v[0])} (L{v[1]})" for f, v in done.items())
            lines.append(
                f"| supervised DAS is the best featurizer ({m}, {var}) | best IIA per "
                f"featurizer: {parts}; {verdict} |"
            )
    lines += _sae_claims(details, models)
    return lines


def _sae_claims(details: dict, models) -> list[str]:
    """The SAE-vs-neurons claim, from the SAE site's stage (or why it was not measured)."""
    sae = details.get("sae") or {}
    lines = []
    for m in models:
        row = sae.get(m)
        if not row:
            continue
        for var, r in row.items():
            if not isinstance(r, dict) or "sae" not in r:
                continue
            s, n, d = r.get("sae"), r.get("neurons_dbm"), r.get("das")
            better = s is not None and n is not None and s > n + 0.05
            verdict = "does not agree: SAE features beat neurons" if better else "agrees"
            # IIA of an intervention that changes nothing: the pairs whose label is the
            # base's own
            noop = 1.0 - r["label_changes"] if "label_changes" in r else None
            found = [x for x in (s, n, d) if x is not None]
            if noop is not None and found and max(found) <= noop + 0.02:
                verdict = (
                    f"untested: no featurizer raises IIA above the no-intervention rate "
                    f"({noop:.2f}) at this layer, so none finds the variable there"
                )
            lines.append(
                f"| SAE features are not better than neurons ({m}, {var}, layer {row['layer']}) | "
                f"SAE latents {_f(s)}, neurons {_f(n)}, DAS {_f(d)}; {verdict} (a margin "
                "of 0.05 counts as equal) |"
            )
    if not lines:
        lines.append(
            "| SAE features are not better than neurons | not measured (run with --sae DIR) |"
        )
    return lines


def _sae_table(details: dict, models) -> list[str]:
    from mechjax.analyses.das.sae_site import SAE_FEATURIZERS

    out: list[str] = []
    for m in models:
        row = (details.get("sae") or {}).get(m)
        if not row:
            continue
        out += [
            f"### {m}: SAE features at `{row['site']}` (resid_pre of layer {row['layer']}, "
            f"{row['d_sae']} latents)",
            "",
            "Each featurizer trained on the same pairs with the same budget as above; IIA "
            "on the held-out pairs.",
            "",
            "| variable | " + " | ".join(SAE_FEATURIZERS) + " |",
            "|---|" + "---|" * len(SAE_FEATURIZERS),
        ]
        for var, r in row.items():
            if isinstance(r, dict) and "sae" in r:
                out.append(f"| {var} | " + " | ".join(_f(r.get(f)) for f in SAE_FEATURIZERS) + " |")
        out.append("")
    return out


def _tables(details: dict, models) -> list[str]:
    from mechjax.analyses.das import FEATURIZERS, VARIABLES

    out: list[str] = []
    for m in models:
        if m not in details:
            continue
        layers = details[m]["layers"]
        for _, var in VARIABLES:
            row = details[m].get(var)
            if not row:
                continue
            out += [
                f"### {m}: `{var}`",
                "",
                f"{row['n_pairs']} pairs drawn, base accuracy {_f(row['base_accuracy'])}; "
                + (
                    f"{row['n_train']} train and {row['n_test']} held-out pairs answered right; "
                    if row.get("filtered", True)
                    else f"too few answered right, so all pairs are used ({row['n_train']} "
                    f"train, {row['n_test']} held out): IIA here is not MIB's; "
                )
                + f"the counterfactual label differs from the base answer in "
                f"{_f(row['label_changes'])} of held-out pairs (a featurizer that does nothing "
                f"scores {_f(1 - row['label_changes'])}).",
                "",
                "| featurizer | " + " | ".join(f"L{l}" for l in layers) + " | seconds |",
                "|---|" + "---|" * (len(layers) + 1),
            ]
            for f in FEATURIZERS:
                if f in row:
                    cells = " | ".join(_f(x) for x in row[f])
                    out.append(f"| {f} | {cells} | {row.get(f + '_seconds', 'n/a')} |")
            out.append("")
    return out


def _figure(out: Path, details: dict, models) -> str | None:
    from mechjax.analyses.das import FEATURIZERS, VARIABLES

    panels = [(m, v) for m in models if m in details for _, v in VARIABLES if v in details[m]]
    if not panels:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (m, v) in zip(axes[0], panels):
        layers = details[m]["layers"]
        row = details[m][v]
        for f in FEATURIZERS:
            if f in row:
                ax.plot(layers, row[f], marker="o", label=f)
        ax.axhline(1 - row["label_changes"], color="grey", ls=":", label="no-op")
        sae = (details.get("sae") or {}).get(m, {})
        if isinstance(sae.get(v), dict) and sae[v].get("sae") is not None:
            ax.plot([sae["layer"]], [sae[v]["sae"]], "k*", ms=10, label="SAE latents")
        ax.set_title(f"{m}: {v}", fontsize=9)
        ax.set_xlabel("layer (resid_pre, last token)")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("IIA (held-out)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = out / "iia_per_layer.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _layers_by_model(s: dict) -> str:
    by = s.get("layers_by_model") or {}
    return "".join(f" ({m}: {k} layers)" for m, k in by.items() if m in s.get("models", []))


def _seconds(details: dict, meta: dict) -> str:
    """The run's time: the last process's seconds, and the stages' own sum when stages
    were kept from an earlier process (`--resume`)."""
    own = meta.get("seconds", 0)
    stages = sum(v.get("seconds", 0) for v in (details.get("stage_seconds") or {}).values())
    if own <= 0 and stages > 0:  # merged from several processes: no one process's time
        return f"{stages:.0f} s of stages"
    if stages > own + 1:
        return (
            f"{stages:.0f} s of stages ({own:.0f} s in the last process; the others were "
            "kept from an earlier one with --resume)"
        )
    return f"{own:.0f} s"


def _missing(details: dict, s: dict) -> list[str]:
    """The (model, variable, featurizer) runs the settings asked for and details.json
    lacks, and the toy model if it did not run."""
    from mechjax.analyses.das import FEATURIZERS, VARIABLES

    if s.get("smoke"):
        return []
    gone = []
    for m in s.get("models", []):
        for _, var in VARIABLES:
            row = details.get(m, {}).get(var, {})
            lost = [f for f in FEATURIZERS if f not in row]
            if lost:
                gone.append(f"{var} on {m}: {', '.join(lost)}")
    if "toy" not in details:
        gone.append("the toy model")
    from mechjax.analyses.stages import partial_lines

    return partial_lines(gone, details)


def write_report(out: Path, details: dict, meta: dict) -> None:
    models = [m for m in meta["settings"]["models"] if m in details]
    s = meta["settings"]
    fig = _figure(out, details, models)
    toy = details.get("toy") or {}
    lines = [
        "# DAS and the causal-variable track (MIB, Mueller et al. 2025)",
        "",
        "Fidelity: an offline analogue. The method (featurizers, interchange interventions, "
        "IIA) is MIB's; the data is rebuilt from the causal models, the models are "
        "SmolLM2-135M and Gemma 3 270M instead of MIB's, SAE features are compared at one "
        "site only, and only `resid_pre` at the last token is searched. Details below.",
        "",
        f"Settings: {s.get('n')} + {s.get('n_test')} pairs per variable before filtering, "
        f"k = {s.get('k')}, {s.get('steps')} Adam steps of batch {s.get('batch')} at lr "
        f"{s.get('lr')} (mask logits at {s.get('mask_lr')}; boundless DAS over "
        f"{s.get('boundless_m')} rotated directions), {s.get('n_search_layers')} layers "
        f"evenly spaced{_layers_by_model(s)}; {'quick' if s.get('quick') else 'smoke' if s.get('smoke') else 'full'} "
        f"run, {_seconds(details, meta)}.",
        "",
        *_missing(details, s),
        *([details["note"], ""] if details.get("note") and not _missing(details, s) else []),
        "## Claims",
        "",
        *_claims(details, models),
        "",
        FIDELITY,
        "## Toy model",
        "",
    ]
    if toy:
        lines += [f"- {k}: {v}" for k, v in toy.items() if not isinstance(v, (dict, list))]
        lines.append("")
    lines += ["## IIA per layer", "", *_tables(details, models), *_sae_table(details, models)]
    if fig:
        lines += [f"![IIA per layer]({fig})", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    from mechjax.analyses.das import results_table
    from mechjax.analyses.stages import report_main

    return report_main(argv, "das", write_report, results_table)


if __name__ == "__main__":
    raise SystemExit(main())
