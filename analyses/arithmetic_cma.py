"""Reproduction of "A Mechanistic Interpretation of Arithmetic Reasoning in Language Models
using Causal Mediation Analysis" (Stolfo, Belinkov, Sachan, EMNLP 2023) on SmolLM2-135M,
with the total/direct effects of "A Causal Framework to Quantify the Robustness of
Mathematical Reasoning" (Stolfo, Jin et al., ACL 2023) on the same prompts.

    mechjax reproduce arithmetic-cma --out DIR [--model smollm2-135m] [--n 16]
        [--ops + '*'] [--templates 0 5]

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

Writes DIR/cma.npz (grids per operator and template, token labels, positions), one PNG
per (operator, template, kind) and DIR/summary.json, and prints the summary: the largest
IE cells, and the mean IE at the operand, operator and last positions in early, middle
and late layers (the paper's four "activation sites": attention moving operand
information to the last token in middle layers, MLPs writing the result there late).
Operators whose operands vary in token length within a template (-, /) have no fixed
operand positions; their grids are averaged by token index, so use + and * for the
position-resolved picture.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

KINDS = ("attn_out", "mlp_out")
ROLES = ("op1", "operator", "op2", "end")


def _bands(n_layers: int) -> dict[str, slice]:
    third = n_layers // 3
    return {"early": slice(0, third), "middle": slice(third, 2 * third),
            "late": slice(2 * third, n_layers)}


def _accuracy(model, batch, nums) -> float:
    import jax.numpy as jnp

    from mechjax import metrics
    from mechjax.model import run

    p = np.asarray(metrics.restricted_probs(run(model, jnp.asarray(batch.clean)).logits, nums))
    r = np.asarray([int(np.flatnonzero(nums == a)[0]) for a in np.asarray(batch.answers)])
    return float((p.argmax(-1) == r).mean())


def run_one(model, nums, op: str, template: int, n: int, batch_size: int, seed: int) -> dict:
    """IE grids, effects and accuracy for `n` pairs of one operator and template."""
    from mechjax import mediation, tasks

    tok = model.tokenizer
    grids = {k: [] for k in KINDS}
    weights, acc, tce, dce, positions, labels = [], [], [], [], None, None
    for i, start in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - start)
        batch = tasks.arithmetic(tok, m, seed + i, op=op, template=template)
        same = tasks.arithmetic(tok, m, seed + i, op=op, template=template,
                                intervention="same_result")
        g = mediation.ie_grid(model, batch, KINDS, candidates=nums)
        for k in KINDS:
            grids[k].append(np.asarray(g[k]))
        weights.append(m)
        acc.append(_accuracy(model, batch, nums))
        tce.append(mediation.causal_effect(model, batch, nums, result_changes=True)["rcc"])
        dce.append(mediation.causal_effect(model, same, nums, result_changes=False)["rcc"])
        if labels is not None and batch.clean.shape[1] != len(labels):
            raise ValueError(f"'{op}' template {template}: batches of {len(labels)} and "
                             f"{batch.clean.shape[1]} tokens; pass a --batch that covers --n")
        labels = labels or batch.str_tokens(tok)
        fixed = {r: int(v[0]) for r in ROLES
                 if (v := np.unique(np.asarray(batch.positions[r]))).size == 1}
        positions = fixed if positions is None else {
            r: p for r, p in positions.items() if fixed.get(r) == p}
    w = np.asarray(weights, np.float64) / sum(weights)
    mean = lambda xs: float(np.dot(w, xs))  # noqa: E731
    return {"op": op, "template": template, "n": n,
            "grids": {k: np.tensordot(w, np.stack(v), 1) for k, v in grids.items()},
            "accuracy": mean(acc), "tce": mean(tce), "dce": mean(dce),
            "positions": positions, "labels": labels}


def summarise(res: dict, n_layers: int) -> dict:
    """Top cells and role x layer-band means of each grid."""
    out = {}
    for k, g in res["grids"].items():
        flat = np.argsort(g, axis=None)[::-1][:5]
        top = [{"layer": int(l), "pos": int(p), "token": res["labels"][p], "ie": float(g[l, p])}
               for l, p in zip(*np.unravel_index(flat, g.shape))]
        roles = {f"{role}/{band}": float(g[sl, p].mean())
                 for role, p in res["positions"].items() for band, sl in _bands(n_layers).items()}
        out[k] = {"top": top, "roles": roles, "mean": float(g.mean()), "max": float(g.max())}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mechjax reproduce arithmetic-cma",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=16, help="pairs per operator and template")
    ap.add_argument("--batch", type=int, default=8, help="pairs per compiled sweep")
    ap.add_argument("--ops", nargs="+", default=["+", "*"], choices=["+", "-", "*", "/"])
    ap.add_argument("--templates", nargs="+", type=int, default=[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import mechjax as mj
    from mechjax import mediation, plotting

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = mj.load(args.model)
    nums = mediation.number_token_ids(model.tokenizer)
    L = model.config.n_layers
    arrays, summary = {}, {"model": args.model, "n": args.n, "runs": []}
    for op in args.ops:
        for t in args.templates:
            t0 = time.perf_counter()
            res = run_one(model, nums, op, t, args.n, args.batch, args.seed)
            secs = time.perf_counter() - t0
            s = summarise(res, L)
            tag = f"{'plus' if op == '+' else 'minus' if op == '-' else 'times' if op == '*' else 'over'}_t{t}"
            for k, g in res["grids"].items():
                arrays[f"{tag}/{k}"] = g
                plotting.layer_position(
                    g, out / f"{tag}_{k}.png", res["labels"], cbar_label="indirect effect",
                    title=f"IE of {k}, '{op}' template {t}, {args.n} pairs ({args.model})")
            arrays[f"{tag}/labels"] = np.asarray(res["labels"])
            summary["runs"].append({"op": op, "template": t, "seconds": round(secs, 1),
                                    "accuracy": res["accuracy"], "tce": res["tce"],
                                    "dce": res["dce"], "positions": res["positions"], **s})
            print(f"\n'{op}' template {t}: {args.n} pairs in {secs:.0f} s; base accuracy "
                  f"{res['accuracy']:.2f}; TCE(N->R) {res['tce']:.3f}, DCE(N->R) {res['dce']:.3f}")
            print("  tokens: " + " ".join(f"{i}:{tok!r}" for i, tok in enumerate(res["labels"])))
            for k in KINDS:
                top = ", ".join(f"L{c['layer']} {c['token']!r}@{c['pos']} {c['ie']:.3f}"
                                for c in s[k]["top"])
                print(f"  {k}: mean {s[k]['mean']:.4f}, top {top}")
                print("    " + "  ".join(f"{r} {v:+.4f}" for r, v in s[k]["roles"].items()))
    np.savez(out / "cma.npz", **arrays)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {out / 'cma.npz'}, {out / 'summary.json'} and the figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
