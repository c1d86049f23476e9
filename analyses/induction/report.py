"""`mechjax reproduce induction-emergence`: runs the claims, writes figures, report.md and
results.json.

Stages (one bar step each, timed with compile time apart): Theorem 1's confinement run,
the emergence sweep one N at a time, the standard transformer, the figures and report.
results.json is rewritten after every stage with `"complete": false` (see
`mechjax.analyses.stages`), so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mechjax.analyses.induction.dynamics import (
    Fit,
    emergence_sweep,
    fit_loglog,
    gram_data,
    pca,
    train_reduced,
)
from mechjax.analyses.induction.standard import (
    StandardSetup,
    train_standard,
)
from mechjax.analyses.induction.theory import (
    Ansatz,
    coordinate_index,
    symmetric_population,
    train_disentangled,
)
from mechjax.analyses.stages import Stages

Array = jax.Array
Params = dict[str, Any]  # nested: blocks are a list of dicts


# ============================================================================ reproduce


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    ns: Sequence[int] | None = None,
    lr: float = 1.0,
    smoke: bool = False,
    log=print,
    progress: bool | None = None,
) -> dict:
    """Run the whole reproduction; write report.md, figures and results.json to `out_dir`.

    Args:
      out_dir: output folder (created).
      quick: the small version (< 5 minutes on 2 CPU cores).
      seeds: seeds of the emergence sweep (default 3 quick, 5 full).
      ns: context lengths N (default 4, 8, 16, 32; full adds 64).
      lr: gradient-descent step on the 19 coordinates (1.0 is stable and matches lr 0.5
        to the step, i.e. gradient flow).
      smoke: a seconds-long run of every stage, for tests (numbers not meaningful).
      log: where the progress lines go.
      progress: a bar over the stages on stderr (None: when stderr is a terminal).
    Returns:
      The results dict written to results.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds if seeds is not None else (range(3) if quick else range(5)))
    ns = list(ns if ns is not None else ((4, 8, 16, 32) if quick else (4, 8, 16, 32, 64)))
    t_start = time.time()
    header = {
        "paper": "On the Emergence of Induction Heads for In-Context Learning (arXiv 2511.01033)",
        "quick": quick,
        "smoke": smoke,
        "ns": ns,
        "seeds": seeds,
        "lr": lr,
    }
    with Stages(out / "results.json", 3 + len(ns), progress=progress, log=log) as stages:
        results = _stages(stages, out, header, quick=quick, smoke=smoke)
        results["seconds"] = time.time() - t_start
        (out / "report.md").write_text(_report(results))
        stages.finish(_jsonable(results))
    log(f"wrote {out / 'report.md'} in {results['seconds']:.0f}s")
    return results


def _stages(stages: Stages, out: Path, header: dict, *, quick: bool, smoke: bool) -> dict:
    """Every stage in order; the results so far are saved after each one."""
    log, ns, seeds, lr = stages.log, header["ns"], header["seeds"], header["lr"]
    stages.save(_jsonable(header))
    log("Theorem 1: full weights on the symmetric population (N=2)")
    with stages.stage("theorem 1: confinement"):
        confinement = _confinement(steps=200 if smoke else 300 if quick else 1000)
    log(
        f"  max relative off-ansatz residual {confinement['max_relative_residual']:.2e}; "
        f"max |full - reduced| coordinate {confinement['max_coordinate_gap']:.2e}"
    )
    stages.save({"confinement": _jsonable(confinement)})

    log(f"Emergence sweep N={ns}, seeds={seeds}")
    sweep: dict = {}
    for n in ns:  # one N per stage: each is independent, and the partial file grows by N
        with stages.stage(f"emergence N={n}"):
            sweep.update(emergence_sweep([n], seeds, lr=lr, log=log))
        stages.save(_jsonable(_sweep_fields(sweep, list(sweep))))
    times = [(n, t) for n in ns for t in sweep[n]["t_icl"]]
    fit = fit_loglog([n for n, _ in times], [t for _, t in times])
    fit_pop = fit_loglog(ns, [sweep[n]["t_icl_population"] for n in ns]) if len(ns) >= 3 else None
    t_pop = {n: sweep[n]["t_icl_population"] for n in ns}
    local = {
        f"{a}-{b}": math.log(t_pop[b] / t_pop[a]) / math.log(b / a)
        for a, b in itertools.pairwise(ns)
    }
    order = _order_summary(sweep, ns)
    pca_n = ns[-1]
    ratios, proj = pca(sweep[pca_n]["population"].theta)
    log(
        f"  slope {fit.slope:.3f} [{fit.slope_ci[0]:.3f}, {fit.slope_ci[1]:.3f}]; "
        f"top-3 PCA variance {ratios[:3].sum():.4f}"
    )
    three = [coordinate_index(k) for k in ("alpha_3", "beta_2", "gamma_3")]
    share = {
        n: float(
            np.sum(sweep[n]["population"].theta[-1, three] ** 2)
            / np.sum(sweep[n]["population"].theta[-1] ** 2)
        )
        for n in ns
    }
    scaling = {
        "slope": fit.slope,
        "slope_ci": list(fit.slope_ci),
        "slope_ci_method": fit.method,
        "slope_population": None if fit_pop is None else fit_pop.slope,
        "slope_population_ci": None if fit_pop is None else list(fit_pop.slope_ci),
        "local_slopes": local,
        "emergence_order": order,
        "pca": {
            "n_pairs": pca_n,
            "explained_variance": ratios[:6].tolist(),
            "top3": float(ratios[:3].sum()),
        },
        "three_coordinate_share": share,
    }
    stages.save(_jsonable(scaling))

    log("Standard transformer (cross-entropy, repeated random tokens)")
    setup = StandardSetup(steps=500 if quick else 1500, checkpoint_every=20 if quick else 25)
    if smoke:
        setup = dataclasses.replace(setup, steps=20, checkpoint_every=10)
    with stages.stage("standard transformer"):
        standard = train_standard(setup, out / "standard_run", progress=stages.show)
    log(f"  loss drop at step {standard['t_loss_drop']:.0f}; onsets {standard['onsets']}")
    (out / "standard_curves.json").write_text(json.dumps(standard["curves"]))
    standard_summary = {k: v for k, v in standard.items() if k != "curves"}
    stages.save({"standard": _jsonable(standard_summary)})

    with stages.stage("figures and report"):
        figures = _figures(out, sweep, ns, fit, ratios, proj, pca_n, standard)
    return {
        **header,
        **scaling,
        **_sweep_fields(sweep, ns),
        "confinement": confinement,
        "standard": standard_summary,
        "figures": figures,
    }


def _sweep_fields(sweep: dict, ns: Sequence[int]) -> dict:
    """The per-N results of the emergence sweep, as results.json holds them."""
    return {
        "n_sequences_per_seed": {n: n for n in ns},
        "steps": {n: sweep[n]["steps"] for n in ns},
        "t_icl": {n: sweep[n]["t_icl"] for n in ns},
        "t_icl_population": {n: sweep[n]["t_icl_population"] for n in ns},
        "t_attention": {n: sweep[n]["t_attention"] for n in ns},
        "onsets_population": {n: sweep[n]["onsets_population"] for n in ns},
        "final_coordinates_population": {
            n: dict(
                zip(
                    Ansatz.induction(2 * n, 2 * n + 2).names,
                    np.round(sweep[n]["population"].theta[-1], 4).tolist(),
                )
            )
            for n in ns
        },
    }


def _confinement(*, steps: int, lr: float = 1.0, n_pairs: int = 2) -> dict:
    """Train the full weights on the symmetric population; compare with the reduced run."""
    data = symmetric_population(n_pairs)
    ansatz = Ansatz.induction(2 * n_pairs, 2 * n_pairs + 2)
    _, losses, traj = train_disentangled(data, steps=steps, lr=lr)
    rel = jax.jit(jax.vmap(ansatz.relative_residual))(traj)
    full_theta = np.asarray(jax.jit(jax.vmap(ansatz.theta))(traj))
    red = train_reduced(gram_data(n_pairs), lr=lr, steps=steps, scale=ansatz.norms2)
    gap = np.abs(full_theta[:-1] - red.theta[1:]).max()
    return {
        "n_pairs": n_pairs,
        "population_size": int(data.tok.shape[0]),
        "steps": steps,
        "lr": lr,
        "max_relative_residual": float(np.max(rel)),
        "final_relative_residual": float(rel[-1]),
        "max_coordinate_gap": float(gap),
        "loss_start": float(losses[0]),
        "loss_end": float(losses[-1]),
    }


def _order_summary(sweep: dict, ns: Sequence[int]) -> dict:
    """Which order of onsets of gamma_3, beta_2, alpha_3 was observed, per N and overall."""
    counts: dict[str, int] = {}
    for n in ns:
        for o in [sweep[n]["onsets_population"], *sweep[n]["onsets"]]:
            key = " < ".join(sorted(o, key=lambda k: o[k]))
            counts[key] = counts.get(key, 0) + 1
    return {"counts": counts, "most_common": max(counts, key=counts.get)}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _figures(out: Path, sweep, ns, fit: Fit, ratios, proj, pca_n, standard) -> list[str]:
    from mechjax import plotting

    names = Ansatz.induction(4, 6).names
    highlight = {"alpha_3": "C3", "beta_2": "C2", "gamma_3": "C0"}
    fig, axes = plotting.subplots(1, len(ns), figsize=(4 * len(ns), 3.4), squeeze=False)
    for ax, n in zip(axes[0], ns):
        run = sweep[n]["population"]
        for i, name in enumerate(names):
            if name in highlight:
                ax.plot(run.theta[:, i], color=highlight[name], lw=2, label=name)
            else:
                ax.plot(run.theta[:, i], color="0.75", lw=0.8)
        ax.axvline(sweep[n]["t_icl_population"], color="k", ls=":", lw=1)
        ax2 = ax.twinx()
        ax2.plot(run.loss, color="k", lw=1)
        ax2.set_ylim(0, 0.55)
        ax.set_title(f"N = {n}")
        ax.set_xlabel("GD step")
    axes[0][0].set_ylabel("coordinate (grey: the other 16)")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "trajectories.png", dpi=110)

    fig, ax = plotting.subplots(figsize=(4.5, 3.6))
    for n in ns:
        ax.scatter([n] * len(sweep[n]["t_icl"]), sweep[n]["t_icl"], color="C0", s=14)
    grid = np.linspace(min(ns), max(ns), 50)
    ax.plot(
        grid,
        np.exp(fit.intercept) * grid**fit.slope,
        "C0-",
        label=f"fit slope {fit.slope:.2f} [{fit.slope_ci[0]:.2f}, {fit.slope_ci[1]:.2f}]",
    )
    t_ref = sweep[ns[-1]]["t_icl_population"]
    ax.plot(grid, t_ref * (grid / ns[-1]) ** 2, "k:", label="slope 2")
    ax.set(xscale="log", yscale="log", xlabel="N (pairs in context)", ylabel="t_ICL (steps)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loglog_fit.png", dpi=110)

    fig, axes = plotting.subplots(1, 2, figsize=(8, 3.4))
    k = min(8, len(ratios))
    axes[0].bar(np.arange(1, k + 1), ratios[:k])
    axes[0].set(
        xlabel="principal component",
        ylabel="variance ratio",
        title=f"PCA of the trajectory, N = {pca_n}",
    )
    axes[1].plot(proj[:, 0], proj[:, 1], lw=1)
    axes[1].set(xlabel="PC1", ylabel="PC2", title=f"top 3: {ratios[:3].sum():.4f}")
    fig.tight_layout()
    fig.savefig(out / "pca.png", dpi=110)

    c = standard["curves"]
    fig, axes = plotting.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(c["step"], c["loss"], "k", label="eval loss")
    ax2 = axes[0].twinx()
    ax2.plot(c["step"], c["induction_score"], "C1", label="induction score")
    ax2.plot(c["step"], c["previous_token_score"], "C4", label="previous-token score")
    ax2.set_ylim(0, 1.05)
    axes[0].set_xlabel("step")
    axes[0].legend(loc="upper right", fontsize=8)
    ax2.legend(loc="center right", fontsize=8)
    for name, color in highlight.items():
        x = np.asarray(c[name])
        dev = x - x[0]
        axes[1].plot(
            c["step"],
            dev / max(np.abs(dev).max(), 1e-12),
            color=color,
            label=f"{name} (Eq. {20 + ['alpha_3', 'beta_2', 'gamma_3'].index(name)})",
        )
    axes[1].set(xlabel="step", ylabel="change / max |change|", title="progress measures")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "standard_transformer.png", dpi=110)
    return ["trajectories.png", "loglog_fit.png", "pca.png", "standard_transformer.png"]


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.0f}"


def _report(r: dict) -> str:
    ns = r["ns"]
    lines = [
        "# Emergence of induction heads: reproduction report",
        "",
        f"Paper: {r['paper']}. Mode: {'quick' if r['quick'] else 'full'}; "
        f"runtime {r['seconds']:.0f} s. The reconstruction of the disentangled model and of "
        "the 19-dim ansatz is documented in `mechjax.analyses.induction`.",
        "",
        "## Scaling of the emergence time",
        "",
        f"- Context lengths N = {ns}; seeds {r['seeds']} (each a finite training set of "
        "N sequences with random query indices) plus the exact population (each index once); "
        f"gradient descent on the 19 coordinates from zero with lr {r['lr']}; steps per N: "
        + ", ".join(f"{n}: {r['steps'][n]}" for n in ns)
        + ".",
        f"- Fitted slope of log t_ICL against log N: **{r['slope']:.3f}**, 95% CI "
        f"[{r['slope_ci'][0]:.3f}, {r['slope_ci'][1]:.3f}] ({r['slope_ci_method']}, "
        f"all N x seed points). Paper: about 2 (t_ICL = Theta(N^2)).",
    ]
    if r["slope_population"] is not None:
        lines.append(
            f"- Exact population only: slope {r['slope_population']:.3f}, 95% CI "
            f"[{r['slope_population_ci'][0]:.3f}, {r['slope_population_ci'][1]:.3f}]."
        )
    lines.append(
        "- Local slopes between consecutive N (population): "
        + ", ".join(f"{k}: {v:.2f}" for k, v in r["local_slopes"].items())
        + "."
    )
    lines += [
        "",
        "t_ICL = first step with loss < 0.25 (half the initial loss):",
        "",
        "| N | population | "
        + " | ".join(f"seed {s}" for s in r["seeds"])
        + " | attention >= 0.5 (seeds) |",
        "|---|---|" + "---|" * len(r["seeds"]) + "---|",
    ]
    for n in ns:
        lines.append(
            f"| {n} | {_fmt(r['t_icl_population'][n])} | "
            + " | ".join(_fmt(t) for t in r["t_icl"][n])
            + " | "
            + ", ".join(_fmt(t) for t in r["t_attention"][n])
            + " |"
        )
    lines += [
        "",
        "## Emergence order",
        "",
        "Onset = first step at which a coordinate reaches 10% of its final value "
        "(population runs):",
        "",
        "| N | gamma_3 | beta_2 | alpha_3 |",
        "|---|---|---|---|",
    ]
    for n in ns:
        o = r["onsets_population"][n]
        lines.append(f"| {n} | {_fmt(o['gamma_3'])} | {_fmt(o['beta_2'])} | {_fmt(o['alpha_3'])} |")
    oc = r["emergence_order"]["counts"]
    lines += [
        "",
        "Observed orders over all runs (population and seeds): "
        + "; ".join(f"{k}: {v}" for k, v in oc.items())
        + ". Paper: gamma_3 < beta_2 < alpha_3.",
        "",
        "Final coordinates of the population runs (coordinates other than alpha_3, "
        "beta_2, gamma_3 that end far from 0 depart from the paper's picture):",
        "",
    ]
    for n in ns:
        fc = r["final_coordinates_population"][n]
        big = {k: v for k, v in fc.items() if abs(v) >= 0.1}
        lines.append(f"- N = {n}: " + ", ".join(f"{k} {v:+.2f}" for k, v in big.items()))
    c = r["confinement"]
    p = r["pca"]
    lines += [
        "",
        "## Theorem 1 and PCA",
        "",
        f"- Full weights trained from zero on the exactly symmetric population (N = "
        f"{c['n_pairs']}, {c['population_size']} sequences, {c['steps']} steps, lr {c['lr']}): "
        f"largest off-ansatz residual {c['max_relative_residual']:.2e} of the weight norm "
        f"(final {c['final_relative_residual']:.2e}); loss {c['loss_start']:.3f} -> "
        f"{c['loss_end']:.4f}; the full run's 19 coordinates match the reduced run to "
        f"{c['max_coordinate_gap']:.1e}.",
        f"- PCA of the parameter trajectory (N = {p['n_pairs']}, population run, centred): "
        "explained variance "
        + ", ".join(f"{v:.4f}" for v in p["explained_variance"])
        + f"; top 3: **{p['top3']:.4f}**. Paper: about 3 dominant directions.",
        "- Share of the final squared coordinates in (alpha_3, beta_2, gamma_3), population "
        "runs: "
        + ", ".join(f"N = {n}: {v:.3f}" for n, v in r["three_coordinate_share"].items())
        + ".",
    ]
    s = r["standard"]
    lines += [
        "",
        "## Standard two-layer attention-only transformer",
        "",
        f"- Setup: {s['setup']}; {s['checkpoints']} checkpoints, training "
        f"{s['train_seconds']:.0f} s; heads used: {s['heads']}.",
        f"- Loss drop (eval loss < half its initial value) at step {_fmt(s['t_loss_drop'])}.",
        "- Onset of each progress measure (first checkpoint where its change from step 0 "
        "reaches 10% of its final change): "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in s["onsets"].items())
        + ". Signs and curves: `standard_transformer.png`, `standard_curves.json`.",
        "",
        "## Figures",
        "",
    ]
    lines += [f"- `{f}`" for f in r["figures"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The options of `mechjax reproduce induction-emergence`."""
    from mechjax.cli.main import HelpFormatter

    ap = argparse.ArgumentParser(
        prog="mechjax reproduce induction-emergence",
        description="Reproduce 'On the Emergence of Induction Heads for In-Context Learning'.",
        formatter_class=HelpFormatter,
    )
    ap.add_argument(
        "--out", required=True, help="output folder for report.md, figures and results.json"
    )
    ap.add_argument(
        "--quick", action="store_true", help="small version, under 5 minutes on 2 cores"
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the emergence sweep (default: 0 1 2 with --quick, else 0..4)",
    )
    ap.add_argument(
        "--ns",
        type=int,
        nargs="+",
        default=None,
        help="context lengths N (default: 4 8 16 32, full runs add 64)",
    )
    ap.add_argument("--lr", type=float, default=1.0, help="GD step on the 19 coordinates")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run of every stage (tests)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce induction-emergence --out DIR [--quick]`."""
    args = build_parser().parse_args(argv)
    reproduce(
        args.out,
        quick=args.quick,
        seeds=args.seeds,
        ns=args.ns,
        lr=args.lr,
        smoke=args.smoke,
        progress=False if args.quiet else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
