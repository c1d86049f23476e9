"""`mechjax reproduce induction-emergence`: runs the claims, writes figures, report.md and
results.json.

Stages (one bar step each, timed with compile time apart): Theorem 1's confinement run,
the emergence sweep one N at a time (gradient descent), the standard transformer, the
gradient flow one N at a time to large N (`flow.py`), the plateau, the figures and report
(`writeup.py`).
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

from mechjax.analyses.induction import writeup
from mechjax.analyses.induction.dynamics import (
    emergence_sweep,
    fit_loglog,
    gram_data,
    pca,
    train_reduced,
)
from mechjax.analyses.induction.flow import (
    fit_largest,
    fit_log_corrected,
    flow_sweep,
    local_slopes,
    plateau,
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

FULL_FLOW_NS = [2**k for k in range(2, 15)]  # 4 .. 16384
LARGEST = 4  # the fit over the largest N uses this many N
LOG_FIT_FROM = 16  # the log-corrected fit uses N from here on (the flow's N)


# ============================================================================ reproduce


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    ns: Sequence[int] | None = None,
    lr: float = 1.0,
    flow_ns: Sequence[int] | None = None,
    flow_seeds: Sequence[int] | None = None,
    smoke: bool = False,
    log=print,
    progress: bool | None = None,
) -> dict:
    """Run the whole reproduction; write report.md, figures and results.json to `out_dir`.

    Args:
      out_dir: output folder (created).
      quick: the small version (< 10 minutes on 2 CPU cores).
      seeds: seeds of the emergence sweep (default 3 quick, 5 full).
      ns: context lengths N of the GD sweep (default 4, 8, 16, 32; full adds 64).
      lr: gradient-descent step on the 19 coordinates (1.0 is stable and matches lr 0.5
        to the step, i.e. gradient flow).
      flow_ns: context lengths of the gradient flow (default: full 4 to 16384 by powers
        of 2; quick 256 to 2048, where the log-corrected asymptote already holds).
      flow_seeds: seeds of the gradient flow besides the population (default: full the
        sweep's seeds, quick none).
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
    if flow_ns is None:
        flow_ns = [2, 3, 4] if smoke else [256, 512, 1024, 2048] if quick else FULL_FLOW_NS
    if flow_seeds is None:
        flow_seeds = [] if quick else seeds
    t_start = time.time()
    header = {
        "paper": "On the Emergence of Induction Heads for In-Context Learning (arXiv 2511.01033)",
        "quick": quick,
        "smoke": smoke,
        "ns": ns,
        "seeds": seeds,
        "lr": lr,
        "flow_ns": sorted(flow_ns),
        "flow_seeds": list(flow_seeds),
    }
    n_stages = 4 + len(ns) + len(flow_ns)
    with Stages(out / "results.json", n_stages, progress=progress, log=log) as stages:
        results = _stages(stages, out, header, quick=quick, smoke=smoke)
        results["seconds"] = time.time() - t_start
        (out / "report.md").write_text(writeup.report_text(results))
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

    large, flow = _large_n(stages, header, sweep)

    with stages.stage("figures and report"):
        figures = writeup.figures(out, sweep, ns, fit, ratios, proj, pca_n, standard)
        figures.append(writeup.large_figure(out, large, flow))
    return {
        **header,
        **scaling,
        **_sweep_fields(sweep, ns),
        "confinement": confinement,
        "standard": standard_summary,
        "large_n": large,
        "figures": figures,
    }


def _large_n(stages: Stages, header: dict, sweep: dict) -> tuple[dict, dict]:
    """The gradient flow one N per stage, the plateau, and the fits over large N."""
    log, ns, seeds = stages.log, header["flow_ns"], header["flow_seeds"]
    log(f"Gradient flow N={ns}, seeds={seeds} (plus the population)")
    flow: dict = {}
    large: dict = {"ns": ns, "seeds": seeds, "rtol": 1e-8, "atol": 1e-10}
    for n in ns:
        with stages.stage(f"gradient flow N={n}"):
            flow.update(flow_sweep([n], seeds, log=log))
        large.update(_flow_fields(flow))
        stages.save({"large_n": _jsonable(large)})
    with stages.stage("plateau"):
        plateau_ns = [n for n in ns if n >= 16 and n in {4**k for k in range(2, 12)}] or ns
        large["plateau"] = [plateau(n) for n in plateau_ns]
    t_pop = [flow[n]["t_icl_population"] for n in ns]
    # over the largest N: every seed's point, and the population alone; without seeds
    # the population's points are the fit
    largest, largest_pop = fit_largest(flow, ns, LARGEST) if seeds else (_pop_fit(flow, ns), None)
    log_ns = [n for n in ns if n >= LOG_FIT_FROM] if len(ns) > 3 else ns
    if len(log_ns) < 3:
        log_ns = ns
    lc = fit_log_corrected(log_ns, [flow[n]["t_icl_population"] for n in log_ns])
    large.update(
        {
            "local_slopes": local_slopes(ns, t_pop),
            "log_prediction": {
                f"{a}-{b}": 2 - 1 / math.log(math.sqrt(a * b)) for a, b in zip(ns, ns[1:])
            },
            "fit_largest": _fit_dict(largest, sorted(ns)[-LARGEST:]),
            "fit_largest_population": (
                None if largest_pop is None else _fit_dict(largest_pop, sorted(ns)[-LARGEST:])
            ),
            "fit_log_corrected": {**lc._asdict(), "ns": log_ns},
            "t_ln_over_n2": {n: t * math.log(n) / n**2 for n, t in zip(ns, t_pop)},
            "gd_vs_flow": {
                n: {
                    "gd": sweep[n]["t_icl_population"],
                    "flow": flow[n]["t_icl_population"],
                    "relative": sweep[n]["t_icl_population"] / flow[n]["t_icl_population"] - 1,
                }
                for n in ns
                if n in sweep
            },
        }
    )
    f = large["fit_largest"]
    log(
        f"  slope over N={f['ns']}: {f['slope']:.3f} [{f['slope_ci'][0]:.3f}, "
        f"{f['slope_ci'][1]:.3f}]; log-corrected: N^{lc.slope:.3f} / (ln N)^{lc.power:.3f}"
    )
    stages.save({"large_n": _jsonable(large)})
    return large, flow


def _pop_fit(flow: dict, ns: Sequence[int]):
    top = sorted(ns)[-LARGEST:]
    return fit_loglog(top, [flow[n]["t_icl_population"] for n in top])


def _fit_dict(fit, ns: Sequence[int]) -> dict:
    return {
        "ns": list(ns),
        "slope": fit.slope,
        "slope_ci": list(fit.slope_ci),
        "n_points": fit.n_points,
        "method": fit.method,
    }


def _flow_fields(flow: dict) -> dict:
    """The per-N results of the gradient flow, as results.json holds them."""
    keys = ("t_icl_population", "t_attention_population", "t_icl", "t_attention",
            "onsets_population", "evaluations", "seconds")  # fmt: skip
    return {k: {n: flow[n][k] for n in flow} for k in keys}


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
        "--quick", action="store_true", help="small version, under 10 minutes on 2 cores"
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
        help="context lengths N of the GD sweep (default: 4 8 16 32, full runs add 64)",
    )
    ap.add_argument(
        "--flow-ns",
        type=int,
        nargs="+",
        default=None,
        help="context lengths N of the gradient flow (default: 256 512 1024 2048 with "
        "--quick, else 4 8 ... 16384)",
    )
    ap.add_argument(
        "--flow-seeds",
        type=int,
        nargs="*",
        default=None,
        help="seeds of the gradient flow besides the population (default: none with "
        "--quick, else the sweep's seeds)",
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
        flow_ns=args.flow_ns,
        flow_seeds=args.flow_seeds,
        smoke=args.smoke,
        progress=False if args.quiet else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
