"""Reproduction of "A Mechanistic Interpretation of Arithmetic Reasoning in Language Models
using Causal Mediation Analysis" (Stolfo, Belinkov, Sachan, EMNLP 2023) on SmolLM2-135M,
with the total/direct effects of "A Causal Framework to Quantify the Robustness of
Mathematical Reasoning" (Stolfo, Jin et al., ACL 2023) on the same prompts.

    mechjax reproduce arithmetic-cma --out DIR [--quick] [--model smollm2-135m] [--n 16]
        [--ops + '*'] [--templates 0 5] [--contrast 16] [--shots 0] [--last-only]
        [--layers 0 10 20 29]

Setup (the paper's LLaMA setting, which suits SmolLM2's digit-split tokenizer): results
1..8 (max_n = 9), base/alt pairs from the same template with different operands and a
different result (intervention type 1), P restricted to the number tokens 0..9.

- Indirect effect of every attention output and MLP output at every layer and position:
  the base prompt is run with that one activation set to its value on the alt prompt,
  IE = 1/2 [(P(r) - P*(r))/P*(r) + (P*(r') - P(r'))/P(r')], averaged over pairs
  (`mediation.ie_grid`: one compiled sweep per kind, batches of `--batch` pairs;
  `--layers` sweeps a subset, the grids' rows then being those layers).
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

Writes DIR/report.md (fidelity to the paper first, then the paper's claims and the
measured numbers side by side, the figures), DIR/results.json and DIR/cma.npz (grids per
operator and template, token labels; both rewritten after every operator, template and
the control, with `"complete": false` until the run ends) and one PNG per (operator,
template, kind), and prints the summary: the largest
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
import sys
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
    layers: Sequence[int] | None = None,
) -> dict:
    """IE grids, effects and accuracy for `n` pairs of one operator and template (or of
    the number-retrieval control, `task="number_retrieval"`: no TCE/DCE). `last_only`:
    only the last position (grids [layer, 1]; for long few-shot prompts, where the full
    sweep grows with the square of the length). `layers`: the layers swept (default
    all; the grids' rows then follow them, `"layers"` in the result)."""
    from mechjax import mediation

    tok = model.tokenizer
    layers = list(range(model.config.n_layers)) if layers is None else [int(x) for x in layers]
    grids = {k: [] for k in KINDS}
    weights, acc, tce, dce, positions, labels, batches = [], [], [], [], None, None, []
    for batch, same in _batches(tok, task, op, template, n, batch_size, seed, shots):
        g = mediation.ie_grid(
            model,
            batch,
            KINDS,
            candidates=nums,
            positions=[-1] if last_only else None,
            layers=layers,
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
        row, pos = (int(i) for i in np.unravel_index(np.argmax(g), g.shape))
        layer = layers[row]
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
        "layers": layers,
        "spread": spread,
    }


def _grid_layers(res: dict, n_layers: int) -> np.ndarray:
    """The layer of each grid row (every layer unless the run swept a subset)."""
    return np.asarray(res.get("layers") or range(n_layers))


def summarise(res: dict, n_layers: int) -> dict:
    """Top cells and role x layer-band means of each grid (bands of the model's layers;
    with a subset of layers swept, a band's mean is over the swept layers in it)."""
    out = {}
    lay = _grid_layers(res, n_layers)
    rows = {
        band: np.flatnonzero((lay >= sl.start) & (lay < sl.stop))
        for band, sl in _bands(n_layers).items()
    }
    for k, g in res["grids"].items():
        flat = np.argsort(g, axis=None)[::-1][:5]
        top = [
            {"layer": int(lay[r]), "pos": int(p), "token": res["labels"][p], "ie": float(g[r, p])}
            for r, p in zip(*np.unravel_index(flat, g.shape))
        ]
        roles = {
            f"{role}/{band}": float(g[idx, p].mean())
            for role, p in res["positions"].items()
            for band, idx in rows.items()
            if idx.size
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
    lay = _grid_layers(res, n_layers)
    subset = len(lay) != n_layers
    for k, g in res["grids"].items():
        arrays[f"{tag}/{k}"] = g
        plotting.layer_position(
            g,
            out / f"{tag}_{k}.png",
            res["labels"],
            yticklabels=[str(x) for x in lay] if subset else None,
            cbar_label="indirect effect",
            title=f"IE of {k}, {title}, {res['n']} pairs ({model_name})",
        )
    arrays[f"{tag}/labels"] = np.asarray(res["labels"])
    if subset:  # the layer of each row, when not every layer was swept
        arrays[f"{tag}/layers"] = lay
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
        "n": res["n"],
        "labels": list(res["labels"]),
        "figures": [f"{tag}_{k}.png" for k in res["grids"]],
        **s,
    }


def _last_token_late_mlp(run: dict) -> float:
    return run["mlp_out"]["roles"]["end/late"]


PAPER_MODELS = "GPT-J 6B, Pythia 2.8B, LLaMA 7B and Goat"


def _f(x) -> str:
    """A measured number as the report prints it (n/a when not measured)."""
    return "n/a" if x is None else f"{x:.4f}"


def _role(rec: dict, kind: str, key: str):
    return rec[kind]["roles"].get(key)


def _top(rec: dict, kind: str) -> str:
    c = rec[kind]["top"][0]
    return f"{_f(c['ie'])} (layer {c['layer']}, {c['token']!r} at {c['pos']})"


def _claims(r: dict) -> list[tuple[str, str]]:
    """(the paper's claim, our measurement) rows of the report's table."""
    rows = []
    for rec in r["runs"]:
        name = f"'{rec['op']}' template {rec['template']}"
        rows += [
            (
                f"{name}: attention carries operand and operator information to the last "
                "token in the middle layers",
                f"attention IE at the last token: early {_f(_role(rec, 'attn_out', 'end/early'))}, "
                f"middle {_f(_role(rec, 'attn_out', 'end/middle'))}, late "
                f"{_f(_role(rec, 'attn_out', 'end/late'))}; largest attention cell "
                + _top(rec, "attn_out"),
            ),
            (
                f"{name}: MLPs at the last token write the result in the late layers",
                f"MLP IE at the last token: early {_f(_role(rec, 'mlp_out', 'end/early'))}, "
                f"middle {_f(_role(rec, 'mlp_out', 'end/middle'))}, late "
                f"{_f(_role(rec, 'mlp_out', 'end/late'))}",
            ),
            (
                f"{name}: early MLPs at the operand positions",
                f"MLP IE in the early layers: 1st operand {_f(_role(rec, 'mlp_out', 'op1/early'))}, "
                f"2nd operand {_f(_role(rec, 'mlp_out', 'op2/early'))}, operator "
                f"{_f(_role(rec, 'mlp_out', 'operator/early'))}; largest MLP cell "
                + _top(rec, "mlp_out"),
            ),
            (
                f"{name}: small models are not robust and not sensitive (robustness paper: "
                "DCE(N->R) comparable to TCE(N->R) below 175B parameters)",
                f"TCE(N->R) {_f(rec['tce'])}, DCE(N->R) {_f(rec['dce'])}; base accuracy "
                f"{_f(rec['accuracy'])}",
            ),
        ]
    c = r.get("contrast")
    if c is not None:
        rows.append(
            (
                "number retrieval (type 11): the last-token MLP effect in the late layers is "
                "much weaker than for arithmetic",
                f"MLP IE at the last token, late layers: retrieval "
                f"{_f(_role(c, 'mlp_out', 'end/late'))} (base accuracy {_f(c['accuracy'])}); "
                + ", ".join(
                    f"'{x['op']}' template {x['template']} {_f(_role(x, 'mlp_out', 'end/late'))}"
                    for x in r["runs"]
                ),
            )
        )
    return rows


def report(r: dict) -> str:
    """report.md of a finished run `r` (the results.json dict): fidelity first, then the
    paper's claims and our numbers side by side, the spread behind the largest cells,
    and the figures."""
    runs = r["runs"] + ([r["contrast"]] if r.get("contrast") else [])
    layers = (
        f"layers {', '.join(map(str, r['layers']))} of {r['n_layers']}"
        if r.get("layers")
        else f"all {r['n_layers']} layers"
    )
    contrast = (
        f" and {r['contrast_n']} pairs of the number-retrieval control" if r.get("contrast") else ""
    )
    mode = (
        "This is the quick run (`--quick`): few pairs, so the numbers are noisy."
        if r["quick"]
        else "This is the full run."
    )
    lines = [
        "# Causal mediation analysis of arithmetic: reproduction report",
        "",
        f"Fidelity: {r['model']} ({r['model_description']}"
        + (
            "; the quantized weights dequantized to fp32, so every number is the quantized model's"
            if "gguf" in (r["model"] + r["model_description"]).lower()
            else ""
        )
        + ") instead of "
        f"the paper's {PAPER_MODELS}, 20 to 50 times larger; prompts generated from the "
        "paper's templates in its LLaMA setting (single-digit results 1..8, P restricted "
        "to the number tokens 0..9) rather than the paper's sampled data; "
        f"{r['n']} base/alt pairs per operator and template{contrast}, {r['shots']} "
        f"solved examples before each prompt, mediators at "
        f"{'the last position only' if r['last_only'] else 'every position'} of {layers}. "
        f"{mode} Command: `{r['command']}`; runtime {r['seconds']:.0f} s.",
        "",
        'Paper: Stolfo, Belinkov, Sachan, "A Mechanistic Interpretation of Arithmetic '
        'Reasoning in Language Models using Causal Mediation Analysis" (EMNLP 2023), with the '
        'total and direct effects of Stolfo, Jin et al., "A Causal Framework to Quantify the '
        'Robustness of Mathematical Reasoning with Language Models" (ACL 2023). IE = 1/2 '
        "[(P(r) - P*(r))/P*(r) + (P*(r') - P(r'))/P(r')] of one attention or MLP output "
        "patched from the alt prompt into the base prompt, averaged over pairs; layer bands "
        f"are thirds of the {r['n_layers']} layers (early, middle, late).",
        "",
        "## Claims",
        "",
        "| the paper | this run |",
        "|---|---|",
    ]
    lines += [f"| {claim} | {ours} |" for claim, ours in _claims(r)]
    lines += [
        "",
        "The magnitudes are not comparable with the paper's across models of such different "
        "size; the comparison is where the effects sit.",
        "",
        "## The pairs behind the largest cells",
        "",
        "IE is a ratio with P*(r) and P(r') in the denominators, so one pair with a small "
        "P*(r) can dominate a mean. For each grid's largest cell, the per-pair IE from single "
        "patched forwards (`mediation.ie_per_pair`, whose mean equals the cell):",
        "",
        "| task | mediator | cell (layer, position) | mean | median | largest pair | "
        "positive pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for rec in runs:
        task = (
            "number retrieval"
            if rec["task"] == "number_retrieval"
            else f"'{rec['op']}' template {rec['template']}"
        )
        for k in KINDS:
            sp = rec[k]["top_cell_pairs"]
            lines.append(
                f"| {task} | {k} | {sp['layer']}, {sp['pos']} | {_f(sp['mean'])} | "
                f"{_f(sp['median'])} | {_f(sp['max'])} | {sp['positive']:.0%} |"
            )
    lines += [
        "",
        "## Not re-measured",
        "",
        "- Operators whose operands change token length within a template (-, /) have no "
        "fixed operand positions: their grids are averaged by token index, so the "
        "position-resolved picture is for + and * only.",
        "- Operands up to 300, more pairs, three-operand queries and the LAMA factual-recall "
        "control (not available offline).",
        "",
        "## Figures",
        "",
    ]
    for rec in runs:
        lines += [f"![{fig}]({fig})" for fig in rec["figures"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The options of `mechjax reproduce arithmetic-cma`."""
    from mechjax.cli.main import HelpFormatter

    ap = argparse.ArgumentParser(
        prog="mechjax reproduce arithmetic-cma",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    ap.add_argument(
        "--out", required=True, help="output folder (report.md, results.json, cma.npz, PNGs)"
    )
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
    ap.add_argument(
        "--layers",
        nargs="+",
        type=int,
        default=None,
        help="layers to sweep (default all): the grids' rows, the layer bands' means over "
        "the swept layers in each band; compile and run time shrink with the layers",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt sampler")
    ap.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    return ap


# full-run values of the options that --quick shrinks
FULL = {"n": 16, "contrast": 16, "ops": ["+", "*"]}
QUICK = {"n": 4, "contrast": 4, "ops": ["+"]}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    import mechjax as mj
    from mechjax import mediation
    from mechjax.analyses.stages import Stages

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = mj.load(args.model)
    nums = mediation.number_token_ids(model.tokenizer)
    L = model.config.n_layers
    if args.layers is not None and (
        len(set(args.layers)) != len(args.layers) or not all(0 <= x < L for x in args.layers)
    ):
        raise SystemExit(f"--layers must be distinct layers in [0, {L}), got {args.layers}")
    layers = sorted(args.layers) if args.layers is not None else None
    arrays: dict = {}
    from mechjax.io import registry

    summary: dict = {
        "model": args.model,
        "model_description": (
            registry.get_entry(args.model).description
            if registry.is_registered(args.model)
            else args.model
        ),
        "n_layers": L,
        "n": args.n,
        "contrast_n": args.contrast,
        "shots": args.shots,
        "last_only": args.last_only,
        "layers": layers,
        "quick": args.quick,
        "command": "mechjax reproduce arithmetic-cma " + " ".join(_shell(a) for a in argv),
        "runs": [],
    }
    names = {"+": "plus", "-": "minus", "*": "times", "/": "over"}
    cells = [(op, t) for op in args.ops for t in args.templates]
    total = len(cells) + bool(args.contrast)
    # results.json and cma.npz are rewritten after every cell ("complete": false until the
    # end), so an interrupted run keeps the cells it finished
    with Stages(out / "results.json", total, progress=False if args.quiet else None) as stages:
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
                    layers=layers,
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
                    layers=layers,
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
        summary["seconds"] = round(time.perf_counter() - t_start, 1)
        (out / "report.md").write_text(report(summary))
        stages.finish(summary)
    print(f"\nwrote {out / 'report.md'}, {out / 'results.json'}, {out / 'cma.npz'} and the figures")
    return 0


def _shell(arg: str) -> str:
    """`arg` quoted for a shell command line when it needs it (`'*'`)."""
    import shlex

    return shlex.quote(arg)


def _save_arrays(out: Path, arrays: dict) -> None:
    """cma.npz with every grid so far, replaced whole (never half-written)."""
    tmp = out / "cma.partial.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out / "cma.npz")


if __name__ == "__main__":
    raise SystemExit(main())
