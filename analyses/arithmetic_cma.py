"""Reproduction of "A Mechanistic Interpretation of Arithmetic Reasoning in Language Models
using Causal Mediation Analysis" (Stolfo, Belinkov, Sachan, EMNLP 2023) on SmolLM2-135M,
with the total/direct effects of "A Causal Framework to Quantify the Robustness of
Mathematical Reasoning" (Stolfo, Jin et al., ACL 2023) on the same prompts.

    mechjax reproduce arithmetic-cma --out DIR [--quick] [--model smollm2-135m] [--n 16]
        [--ops + '*'] [--templates 0 5] [--contrast 16] [--shots 0] [--last-only]

Setup (the paper's LLaMA setting, which suits SmolLM2's digit-split tokenizer): results
1..8 (max_n = 9), base/alt pairs from the same template with different operands and a
different result (intervention type 1), P restricted to the number tokens 0..9.

- Indirect effect of every attention output and MLP output at every layer and position:
  the base prompt is run with that one activation set to its value on the alt prompt,
  IE = 1/2 [(P(r) - P*(r))/P*(r) + (P*(r') - P(r'))/P(r')], averaged over pairs
  (`mediation.ie_grid`: one compiled sweep per kind, batches of `--batch` pairs).
- Total causal effect of the operands on the output, TCE(N->R) (type 1b, result changes:
  relative confidence change), and their direct effect DCE(N->R) (type 2: operands change,
  result fixed: max-ratio confidence change), both over number tokens
  (`mediation.causal_effect`).
- Base-prompt accuracy: argmax over the number tokens equals r.
- The paper's control, number retrieval (type 11: "I have x A and y B. How many A ...",
  alt asks for B): the same IE grids, where the result is copied, not computed; the
  paper finds the last-token MLP effect in late layers much weaker there.
- For each grid's largest cell, the per-pair IE behind the mean (`mediation.ie_per_pair`):
  median, largest pair and the share of pairs with a positive effect, since IE's ratios
  can let one pair with a small P*(r) dominate the mean.

Writes DIR/cma.npz (grids per operator and template, token labels, positions), one PNG
per (operator, template, kind) and DIR/summary.json (both rewritten after every operator,
template and the control, with `"complete": false` until the run ends), and prints the summary: the largest
IE cells, and the mean IE at the operand, operator and last positions in early, middle
and late layers (the paper's four "activation sites": attention moving operand
information to the last token in middle layers, MLPs writing the result there late).
Operators whose operands vary in token length within a template (-, /) have no fixed
operand positions; their grids are averaged by token index, so use + and * for the
position-resolved picture.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

KINDS = ("attn_out", "mlp_out")
ROLES = ("op1", "operator", "op2", "end")


def _bands(n_layers: int) -> dict[str, slice]:
    third = n_layers // 3
    return {
        "early": slice(0, third),
        "middle": slice(third, 2 * third),
        "late": slice(2 * third, n_layers),
    }


def _accuracy(model, batch, nums) -> float:
    import jax.numpy as jnp

    from mechjax import metrics
    from mechjax.model import run

    p = np.asarray(metrics.restricted_probs(run(model, jnp.asarray(batch.clean)).logits, nums))
    r = np.asarray([int(np.flatnonzero(nums == a)[0]) for a in np.asarray(batch.answers)])
    return float((p.argmax(-1) == r).mean())


def _batches(
    tok, task: str, op: str, template: int, n: int, batch_size: int, seed: int, shots: int = 0
):
    """(base/alt batch, same-result batch or None) per chunk of `batch_size` pairs."""
    from mechjax import tasks

    if task == "number_retrieval":  # one draw, so that every chunk has the same length
        full = tasks.number_retrieval(tok, n, seed, n_shots=shots)
        for start in range(0, n, batch_size):
            yield full.rows(slice(start, start + batch_size)), None
        return
    for i, start in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - start)
        yield (
            tasks.arithmetic(tok, m, seed + i, op=op, template=template, n_shots=shots),
            tasks.arithmetic(
                tok,
                m,
                seed + i,
                op=op,
                template=template,
                intervention="same_result",
                n_shots=shots,
            ),
        )


def run_one(
    model,
    nums,
    op: str,
    template: int,
    n: int,
    batch_size: int,
    seed: int,
    task: str = "arithmetic",
    shots: int = 0,
    last_only: bool = False,
) -> dict:
    """IE grids, effects and accuracy for `n` pairs of one operator and template (or of
    the number-retrieval control, `task="number_retrieval"`: no TCE/DCE). `last_only`:
    only the last position (grids [layer, 1]; for long few-shot prompts, where the full
    sweep grows with the square of the length)."""
    from mechjax import mediation

    tok = model.tokenizer
    grids = {k: [] for k in KINDS}
    weights, acc, tce, dce, positions, labels, batches = [], [], [], [], None, None, []
    for batch, same in _batches(tok, task, op, template, n, batch_size, seed, shots):
        g = mediation.ie_grid(
            model, batch, KINDS, candidates=nums, positions=[-1] if last_only else None
        )
        for k in KINDS:
            grids[k].append(np.asarray(g[k]))
        weights.append(len(batch))
        batches.append(batch)
        acc.append(_accuracy(model, batch, nums))
        if same is not None:
            tce.append(mediation.causal_effect(model, batch, nums, result_changes=True)["rcc"])
            dce.append(mediation.causal_effect(model, same, nums, result_changes=False)["rcc"])
        if labels is not None and not last_only and batch.clean.shape[1] != len(labels):
            raise ValueError(
                f"{task} '{op}' template {template}: batches of {len(labels)} and "
                f"{batch.clean.shape[1]} tokens; pass a --batch that covers --n"
            )
        labels = labels or batch.str_tokens(tok)[-1 if last_only else 0 :]
        fixed = {
            r: int(v[0])
            for r in ROLES
            if r in batch.positions and (v := np.unique(np.asarray(batch.positions[r]))).size == 1
        }
        if last_only:
            fixed = {"end": 0}
        positions = (
            fixed
            if positions is None
            else {r: p for r, p in positions.items() if fixed.get(r) == p}
        )
    w = np.asarray(weights, np.float64) / sum(weights)
    mean = lambda xs: float(np.dot(w, xs)) if xs else None  # noqa: E731
    grids = {k: np.tensordot(w, np.stack(v), 1) for k, v in grids.items()}
    spread = {}
    for k, g in grids.items():  # the pairs behind each grid's largest cell
        layer, pos = (int(i) for i in np.unravel_index(np.argmax(g), g.shape))
        per = np.concatenate(
            [
                mediation.ie_per_pair(
                    model, b, k, layer, b.clean.shape[1] - 1 if last_only else pos, candidates=nums
                )
                for b in batches
            ]
        )
        spread[k] = {
            "layer": layer,
            "pos": pos,
            "mean": float(per.mean()),
            "median": float(np.median(per)),
            "max": float(per.max()),
            "max_pair_share": float(per.max() / per.sum()) if per.sum() > 0 else None,
            "positive": float((per > 0).mean()),
        }
    return {
        "task": task,
        "op": op,
        "template": template,
        "n": n,
        "grids": grids,
        "accuracy": mean(acc),
        "tce": mean(tce),
        "dce": mean(dce),
        "positions": positions,
        "labels": labels,
        "spread": spread,
    }


def summarise(res: dict, n_layers: int) -> dict:
    """Top cells and role x layer-band means of each grid."""
    out = {}
    for k, g in res["grids"].items():
        flat = np.argsort(g, axis=None)[::-1][:5]
        top = [
            {"layer": int(l), "pos": int(p), "token": res["labels"][p], "ie": float(g[l, p])}
            for l, p in zip(*np.unravel_index(flat, g.shape))
        ]
        roles = {
            f"{role}/{band}": float(g[sl, p].mean())
            for role, p in res["positions"].items()
            for band, sl in _bands(n_layers).items()
        }
        out[k] = {
            "top": top,
            "roles": roles,
            "mean": float(g.mean()),
            "max": float(g.max()),
            "top_cell_pairs": res["spread"][k],
        }
    return out


def _record(
    res: dict,
    tag: str,
    title: str,
    secs: float,
    out: Path,
    arrays: dict,
    n_layers: int,
    model_name: str,
    log=print,
) -> dict:
    """Figures and arrays of one run; logs its summary and returns it."""
    from mechjax import plotting

    s = summarise(res, n_layers)
    for k, g in res["grids"].items():
        arrays[f"{tag}/{k}"] = g
        plotting.layer_position(
            g,
            out / f"{tag}_{k}.png",
            res["labels"],
            cbar_label="indirect effect",
            title=f"IE of {k}, {title}, {res['n']} pairs ({model_name})",
        )
    arrays[f"{tag}/labels"] = np.asarray(res["labels"])
    effects = (
        "" if res["tce"] is None else f"; TCE(N->R) {res['tce']:.3f}, DCE(N->R) {res['dce']:.3f}"
    )
    log(
        f"\n{title}: {res['n']} pairs in {secs:.0f} s; base accuracy {res['accuracy']:.2f}{effects}"
    )
    log("  tokens: " + " ".join(f"{i}:{tok!r}" for i, tok in enumerate(res["labels"])))
    for k in KINDS:
        top = ", ".join(
            f"L{c['layer']} {c['token']!r}@{c['pos']} {c['ie']:.3f}" for c in s[k]["top"]
        )
        sp = s[k]["top_cell_pairs"]
        log(f"  {k}: mean {s[k]['mean']:.4f}, top {top}")
        log(
            f"    largest cell over pairs: median {sp['median']:.3f}, mean {sp['mean']:.3f}, "
            f"largest pair {sp['max']:.3f}, positive in {sp['positive']:.0%} of pairs"
        )
        log("    " + "  ".join(f"{r} {v:+.4f}" for r, v in s[k]["roles"].items()))
    return {
        "task": res["task"],
        "op": res["op"],
        "template": res["template"],
        "seconds": round(secs, 1),
        "accuracy": res["accuracy"],
        "tce": res["tce"],
        "dce": res["dce"],
        "positions": res["positions"],
        **s,
    }


def _last_token_late_mlp(run: dict) -> float:
    return run["mlp_out"]["roles"]["end/late"]


def build_parser() -> argparse.ArgumentParser:
    """The options of `mechjax reproduce arithmetic-cma`."""
    from mechjax.cli.main import HelpFormatter

    ap = argparse.ArgumentParser(
        prog="mechjax reproduce arithmetic-cma",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    ap.add_argument("--out", required=True, help="output folder (cma.npz, summary.json, PNGs)")
    ap.add_argument("--model", default="smollm2-135m", help="registry name or checkpoint")
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"a smaller run: --n {QUICK['n']}, --contrast {QUICK['contrast']}, "
        f"--ops {' '.join(QUICK['ops'])} unless those are given",
    )
    ap.add_argument(
        "--n", type=int, default=None, help="pairs per operator and template (default: 16)"
    )
    ap.add_argument("--batch", type=int, default=8, help="pairs per compiled sweep")
    ap.add_argument(
        "--ops",
        nargs="+",
        default=None,
        choices=["+", "-", "*", "/"],
        help="operators (default: + *)",
    )
    ap.add_argument("--templates", nargs="+", type=int, default=[0], help="template indices")
    ap.add_argument(
        "--contrast",
        type=int,
        default=None,
        help="pairs of the number-retrieval control, 0 skips it (default: 16)",
    )
    ap.add_argument(
        "--shots",
        type=int,
        default=0,
        help="solved examples of the same template before every prompt",
    )
    ap.add_argument(
        "--last-only",
        action="store_true",
        help="mediators at the last position only (cheap for long prompts)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt sampler")
    ap.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    return ap


# full-run values of the options that --quick shrinks
FULL = {"n": 16, "contrast": 16, "ops": ["+", "*"]}
QUICK = {"n": 4, "contrast": 4, "ops": ["+"]}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    import mechjax as mj
    from mechjax import mediation
    from mechjax.analyses.stages import Stages

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = mj.load(args.model)
    nums = mediation.number_token_ids(model.tokenizer)
    L = model.config.n_layers
    arrays: dict = {}
    summary: dict = {
        "model": args.model,
        "n": args.n,
        "shots": args.shots,
        "last_only": args.last_only,
        "quick": args.quick,
        "runs": [],
    }
    names = {"+": "plus", "-": "minus", "*": "times", "/": "over"}
    cells = [(op, t) for op in args.ops for t in args.templates]
    total = len(cells) + bool(args.contrast)
    # summary.json and cma.npz are rewritten after every cell ("complete": false until the
    # end), so an interrupted run keeps the cells it finished
    with Stages(out / "summary.json", total, progress=False if args.quiet else None) as stages:
        stages.save(summary)
        for op, t in cells:
            title = f"'{op}' template {t}"
            t0 = time.perf_counter()
            with stages.stage(title):
                res = run_one(
                    model,
                    nums,
                    op,
                    t,
                    args.n,
                    args.batch,
                    args.seed,
                    shots=args.shots,
                    last_only=args.last_only,
                )
                rec = _record(
                    res,
                    f"{names[op]}_t{t}",
                    title,
                    time.perf_counter() - t0,
                    out,
                    arrays,
                    L,
                    args.model,
                    log=stages.log,
                )
            summary["runs"].append(rec)
            _save_arrays(out, arrays)
            stages.save(summary)
        if args.contrast:
            t0 = time.perf_counter()
            title = "number retrieval (type 11)"
            with stages.stage(title):
                res = run_one(
                    model,
                    nums,
                    "",
                    -1,
                    args.contrast,
                    args.batch,
                    args.seed,
                    task="number_retrieval",
                    shots=args.shots,
                    last_only=args.last_only,
                )
                summary["contrast"] = _record(
                    res,
                    "retrieval",
                    title,
                    time.perf_counter() - t0,
                    out,
                    arrays,
                    L,
                    args.model,
                    log=stages.log,
                )
            _save_arrays(out, arrays)
            late = _last_token_late_mlp(summary["contrast"])
            stages.log(
                "\nlast-token MLP IE in the late layers (mean over the late third): "
                f"number retrieval {late:.4f}; "
                + ", ".join(
                    f"'{r['op']}' t{r['template']} {_last_token_late_mlp(r):.4f}"
                    for r in summary["runs"]
                )
            )
        stages.finish(summary)
    print(f"\nwrote {out / 'cma.npz'}, {out / 'summary.json'} and the figures")
    return 0


def _save_arrays(out: Path, arrays: dict) -> None:
    """cma.npz with every grid so far, replaced whole (never half-written)."""
    tmp = out / "cma.partial.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out / "cma.npz")


if __name__ == "__main__":
    raise SystemExit(main())
