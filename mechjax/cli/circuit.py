"""`mechjax circuit MODEL --task ioi --method eap-ig --out DIR`: circuit discovery as MIB
does it, on one task.

Writes to DIR: `scores.npz` (edge scores, the graph's node names and edge mask),
`circuits.npz` (the pruned circuit at each MIB fraction, signed and absolute rankings),
`faithfulness.json` (f per fraction, CPR, CMD, mean f, edge counts), `faithfulness.png`
and `circuit.png` (the circuit at `--fraction`, nodes by layer). Scores come from
`--n` pairs and faithfulness from `--n-eval` other pairs of the same task.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("eap", "eap-ig", "eap-ig-act", "clean-corrupted", "ifr", "masks", "exact", "random")
TASKS = ("ioi", "arithmetic", "mcqa", "multiple-choice", "induction")


def add_parser(subparsers) -> None:
    """Register `circuit` on the `mechjax` command's subparsers."""
    c = subparsers.add_parser(
        "circuit",
        help="circuit discovery: edge scores, MIB's circuits and faithfulness, a drawing",
        description=(__doc__ or "").split("\n\n")[0],
    )
    c.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    c.add_argument("--task", choices=TASKS, default="ioi", help="clean/counterfactual pairs")
    c.add_argument("--data", default=None, help="JSONL questions (--task multiple-choice)")
    c.add_argument("--method", choices=METHODS, default="eap-ig", help="edge scoring method")
    c.add_argument("--n", type=int, default=16, help="attribution pairs")
    c.add_argument("--n-eval", type=int, default=16, help="evaluation pairs (other seed)")
    c.add_argument("--steps", type=int, default=5, help="EAP-IG steps (MIB uses 5)")
    c.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    c.add_argument(
        "--ablation", choices=("corrupted", "mean", "zero"), default="corrupted",
        help="what non-circuit edges carry",
    )  # fmt: skip
    c.add_argument("--fraction", type=float, default=0.01, help="circuit drawn in circuit.png")
    c.add_argument("--seed", type=int, default=0, help="seed of the attribution pairs")
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(fn=cmd_circuit)


def _pairs(args, model, n: int, seed: int):
    from mechjax import tasks

    if args.task == "ioi":
        return tasks.ioi(model.tokenizer, n=n, seed=seed)
    if args.task == "arithmetic":
        return tasks.arithmetic(model.tokenizer, n=n, seed=seed)
    if args.task == "mcqa":
        return tasks.mcqa(model.tokenizer, n=n, seed=seed)
    if args.task == "induction":  # repeated random tokens: no tokenizer needed
        return tasks.induction(model.config.d_vocab, n=n, seed=seed, half=6)
    from mechjax.errors import InputError

    if not args.data:
        raise InputError("--task multiple-choice needs --data FILE.jsonl")
    b = tasks.multiple_choice(model.tokenizer, args.data, seed=seed)
    half = len(b) // 2  # attribution and evaluation from the two halves of the file
    if half == 0:
        raise InputError(f"{args.data}: need at least 2 questions, got {len(b)}")
    return b.rows(slice(0, half)) if seed == args.seed else b.rows(slice(half, None))


def _scores(args, model, b):
    import jax.numpy as jnp
    import numpy as np

    from mechjax import circuits, metrics
    from mechjax.circuits import masks as M

    c, k = jnp.asarray(b.clean), jnp.asarray(b.corrupted)
    mask = b.info.get("attention_mask")
    am = None if mask is None else jnp.asarray(mask)
    loss = metrics.Negate(b.logit_diff())
    bs = args.batch_size
    m = args.method
    if m == "eap":
        return circuits.eap(
            model, c, k, loss, ablation=args.ablation, batch_size=bs, attention_mask=am
        )[0]
    if m in ("eap-ig", "eap-ig-act"):
        variant = "activations" if m == "eap-ig-act" else "inputs"
        return circuits.eap_ig(model, c, k, loss, steps=args.steps, variant=variant,
                               ablation=args.ablation, batch_size=bs, chunk_size=1, attention_mask=am)[0]  # fmt: skip
    if m == "clean-corrupted":
        return circuits.clean_corrupted(model, c, k, loss, batch_size=bs, attention_mask=am)[0]
    if m == "ifr":
        return circuits.information_flow_routes(model, c, batch_size=bs, attention_mask=am)[0]
    if m == "exact":
        return circuits.exact_edge_scores(
            model, c, k, loss, ablation=args.ablation, attention_mask=am
        )[0]
    if m == "masks":
        cfg = M.MaskConfig(steps=50, batch_size=min(bs, len(b)))
        res = M.train_masks(model, c, k, circuits.MIB_FRACTIONS, config=cfg,
                            ablation=args.ablation, attention_mask=am)  # fmt: skip
        return M.keep_probability(res.log_alpha, cfg)
    g = circuits.graph_of(model)
    return np.random.RandomState(args.seed).randn(*g.valid.shape) * g.valid


def cmd_circuit(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import numpy as np

    import mechjax as mj
    from mechjax import circuits
    from mechjax.circuits import draw

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = mj.load(args.model)
    attr = _pairs(args, model, args.n, args.seed)
    ev = _pairs(args, model, args.n_eval, args.seed + 1)
    scores = np.asarray(_scores(args, model, attr))
    graph = circuits.graph_of(model)
    mask = ev.info.get("attention_mask")
    construction = "greedy" if args.method == "ifr" else "topn"
    res = circuits.faithfulness(
        model, jnp.asarray(ev.clean), jnp.asarray(ev.corrupted), ev.logit_diff(), scores,
        graph, construction=construction, ablation=args.ablation,
        attention_mask=None if mask is None else jnp.asarray(mask),
    )  # fmt: skip
    np.savez(out / "scores.npz", scores=scores, valid=graph.valid, src=np.asarray(graph.src),
             dst=np.asarray(graph.dst))  # fmt: skip
    fr = circuits.MIB_FRACTIONS
    signed = circuits.circuits_at(scores, graph, fr, absolute=False, method=construction)
    absolute = circuits.circuits_at(scores, graph, fr, absolute=True, method=construction)
    np.savez(out / "circuits.npz", fractions=np.asarray(fr), signed=signed, absolute=absolute)
    (out / "faithfulness.json").write_text(json.dumps(res, indent=2))
    title = f"{args.model}, {args.task}, {args.method}"
    draw.plot_faithfulness(
        res, out / "faithfulness.png", title=f"{title}: CPR {res['cpr']:.2f}, CMD {res['cmd']:.2f}"
    )
    s = (
        scores
        if scores.ndim == 2
        else scores[int(np.argmin(np.abs(np.asarray(fr) - args.fraction)))]
    )
    shown = circuits.circuits_at(s, graph, [args.fraction], absolute=construction == "topn",
                                 method=construction)[0]  # fmt: skip
    draw.draw_circuit(graph, shown, s, out / "circuit.png",
                      title=f"{title}: {int(shown.sum())} edges at {args.fraction:g}")  # fmt: skip
    print(f"{graph.n_edges} edges; CPR {res['cpr']:.3f} (signed), CMD {res['cmd']:.3f} "
          f"(absolute); m(full) {res['full']:.3f}, m(empty) {res['empty']:.3f}")  # fmt: skip
    print(f"wrote scores.npz, circuits.npz, faithfulness.json/.png, circuit.png -> {out}")
    return 0
