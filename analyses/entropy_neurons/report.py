"""report.md of the entropy-neurons reproduction: fidelity first, then the paper's claims
and ours side by side (every number read from the results the run wrote), then figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def _rows(r: dict) -> list[tuple[str, str, str]]:
    """(paper's claim, our measurement, agrees?) for one model."""
    w, a, tf, ind = r["weights"], r["ablations"], r["token_frequency"], r["induction"]
    n = len(w["entropy_neurons"])
    norm_pct = _mean(w["norm_percentile_top"])
    lvar_pct = _mean(w["logit_var_percentile_top"])
    rho_top = _mean(w["rho_top"])
    top, rand = a["ln_mediated_fraction_top"], a["ln_mediated_fraction_random"]
    dh_top, dh_nn, dh_rand = (
        a["abs_d_entropy_top"],
        a["abs_d_entropy_null_norm"],
        a["abs_d_entropy_random"],
    )
    nn_frac = a["ln_mediated_fraction_null_norm"]
    n_tf = len(tf["token_frequency_neurons"])
    act0, act1 = ind["activation_first_half"][0], ind["activation_repeated_half"][0]
    act_bos = ind["bos_ablation_activation_repeated"][0]
    yes = lambda c: "yes" if c else "no"  # noqa: E731
    return [
        (
            "Entropy neurons have an unusually large weight norm and a small LogitVar",
            f"top-{n} rho neurons: mean norm percentile {norm_pct:.0f}, mean LogitVar "
            f"percentile {lvar_pct:.0f}",
            yes(norm_pct >= 90 and lvar_pct <= 50),
        ),
        (
            "They write onto the unembedding's null space",
            f"rho (k={w['k']}) of the top {n}: mean {rho_top:.3f}; median over all neurons "
            f"{w['rho_median']:.3f}; a random direction gives {w['rho_expected_random']:.3f}",
            yes(rho_top >= 3 * w["rho_expected_random"]),
        ),
        (
            "Their effect on the loss goes through the final norm (LN-mediated fraction "
            "large); random neurons near 0",
            f"LN-mediated fraction: entropy neurons (top rho) mean {top:.3f} (median "
            f"{a['ln_mediated_fraction_top_median']:.3f}); top rho x norm mean {nn_frac:.3f} "
            f"(median {a['ln_mediated_fraction_null_norm_median']:.3f}); random mean "
            f"{rand:.3f} (median {a['ln_mediated_fraction_random_median']:.3f})",
            yes(top >= 0.5 and abs(a["ln_mediated_fraction_random_median"]) <= 0.2),
        ),
        (
            "Ablating entropy neurons changes the entropy much more than random neurons",
            f"mean abs(dH) (total): entropy neurons {dh_top:.4f} nats, top rho x norm "
            f"{dh_nn:.4f}, random {dh_rand:.4f}",
            yes(dh_top >= 3 * dh_rand),
        ),
        (
            "Token-frequency neurons exist: their effect goes through the unigram direction, "
            "shifting the output towards or away from the unigram distribution",
            f"{n_tf} of {len(tf['candidates'])} unigram-aligned candidates with a "
            f"unigram-mediated fraction >= 0.5 ({tf['token_frequency_neurons'][:4]}); mean "
            f"fraction candidates {tf['unigram_mediated_fraction_candidates_mean']:.3f}, "
            f"random {tf['unigram_mediated_fraction_random_mean']:.3f}",
            yes(n_tf > 0),
        ),
        (
            "Induction: entropy neurons respond on the repeated half (the paper: they raise "
            "the entropy there, against overconfidence)",
            f"top entropy neuron {ind['entropy_neurons'][0]}: activation {act0:.3f} (first "
            f"half) -> {act1:.3f} (repeat); ablating it changes the repeat's entropy by "
            f"{ind['ablate_top_d_entropy_repeated']:+.4f} nats and loss by "
            f"{ind['ablate_top_d_loss_repeated']:+.4f}",
            yes(abs(act1 - act0) > 0.05 and ind["ablate_top_d_entropy_repeated"] < 0),
        ),
        (
            "BOS-ablating induction heads removes the entropy neuron's response",
            f"heads {ind['induction_heads']} (scores "
            f"{', '.join(f'{s:.2f}' for s in ind['induction_scores'])}): repeat loss "
            f"{ind['loss_repeated_clean']:.3f} -> {ind['bos_ablation_loss_repeated']:.3f}; "
            f"activation on the repeat {act1:.3f} -> {act_bos:.3f}",
            yes(abs(act_bos - act0) < abs(act1 - act0)),
        ),
    ]


def write_report(out: Path, results: dict, meta: dict) -> None:
    """report.md in `out` from the per-model results and the run's settings and seconds;
    also `python -m mechjax.analyses.entropy_neurons.report DIR` rewrites it from DIR's
    results.json."""
    s = meta["settings"]
    lines = [
        "# Confidence regulation neurons (Stolfo, Wu, Gurnee et al., NeurIPS 2024)",
        "",
        "Fidelity: an offline analogue of the paper's measurements, on "
        f"{', '.join(results)} (dequantized GGUF weights) instead of GPT-2, Pythia and "
        "LLaMA2. The paper's C4 text is not available offline: loss and entropy effects are "
        f"measured on {s['n_chunks']} chunks of {s['ctx_len']} tokens of the offline corpus "
        "(`mechjax.corpus`: Python's documentation prose), and unigram counts come from the "
        "same corpus under each model's tokenizer, so the unigram direction is that of a "
        "technical-prose corpus. Entropy neurons are the 10 last-layer neurons with the "
        "largest rho (k = 1% of d_model), as the paper's code selects them; since the paper "
        "describes them as high-norm as well, the 10 with the largest rho x norm (the norm "
        "written into the null space) are measured alongside; the direct "
        "effect freezes the final norm's scale (for Gemma 3 also the last layer's post-MLP "
        "norm, a second normalisation on the neuron's path). The token-frequency scan "
        f"covers the {s['n_candidates']} neurons whose logit write is most aligned with the "
        "unigram direction (plus the random neurons), not every neuron. Induction uses "
        f"{s['induction_n']} sequences of BOS + {s['induction_len']} uniform random tokens, "
        "repeated once." + (" This is the --quick run." if s.get("quick") else ""),
        "",
        f"Run time: {meta['seconds']:.0f} s on 2 CPU cores.",
        "",
    ]
    for name, r in results.items():
        lines += [f"## {name}", "", "| Paper's claim | Ours | Agrees |", "|---|---|---|"]
        lines += [f"| {c} | {m} | {a} |" for c, m, a in _rows(r)]
        lines += [
            "",
            f"Entropy neurons (layer, neuron), top rho: {r['entropy_neurons']}; top rho x "
            f"norm: {r['weights']['entropy_neurons_by_null_norm']} (norm percentiles "
            f"{[round(x) for x in r['weights']['norm_percentile_null_norm']]}).",
            f"Candidates with the largest unigram-mediated fraction: "
            f"{r['token_frequency']['ranked'][:5]}.",
            f"Token-frequency neurons: {r['token_frequency_neurons'] or 'none found'}.",
            "",
            f"![norm vs LogitVar]({name}_norm_logitvar.png) ![rho]({name}_rho.png)",
            "",
        ]
    lines += [
        "Agreement criteria (set in the report code before the full run, never changed "
        "after it): norm percentile >= 90 and LogitVar "
        "percentile <= 50; rho at least 3x a random direction's; LN-mediated fraction >= 0.5 "
        "for entropy neurons with the random neurons' median within 0.2 of 0; abs(dH) at least "
        "3x random; at least one token-frequency neuron; the activation moves by more than "
        "0.05 on the repeat and its ablation lowers the repeat's entropy; BOS ablation "
        "brings the activation closer to its first-half value.",
        "",
    ]
    (Path(out) / "report.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    """Rewrite DIR/report.md from DIR/results.json (the models' entries, settings, time)."""
    import json
    import sys

    out = Path((argv or sys.argv[1:])[0])
    res = json.loads((out / "results.json").read_text())
    meta = {"settings": res["settings"], "seconds": res["seconds"]}
    models = {k: v for k, v in res.items() if isinstance(v, dict) and "weights" in v}
    write_report(out, models, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
