"""`mechjax patch` and `mechjax attribute`: patching grids and attribution scores.

    mechjax patch smollm2-135m --task ioi --site resid_pre --out ioi.npz [--png ioi.png]
    mechjax patch smollm2-135m --clean "..." --corrupt "..." --answer " Mary" --wrong " John" --out p.npz
    mechjax attribute smollm2-135m --task ioi --method eap-ig --out eap.npz

`patch` writes `grid` (the metric after each patch; denoising by default: the clean
activation patched into the corrupted run), `normalized`, `clean_metric`,
`corrupted_metric`, `axes`, `tokens` (the column labels) and `positions`. The metric is
logit[answer] - logit[wrong] at the last position. Columns are absolute positions when
every row of the batch has the same layout (labelled by the token, or by the position's
name where rows hold different names), else the batch's named positions (IO, S1, S2, end),
one index per row (`--positions auto|named|absolute`).

`attribute --method eap|eap-ig` prints the strongest edges: aL.hH is head H of layer L,
mL the MLP of layer L, `input` the embeddings, `logits` the unembedding; a destination
aL.hH<q>, <k> or <v> is that head's query, key or value input (a3.h2 -> a5.h1<q> = head 2
of layer 3 into the query input of head 1 of layer 5). `--png` draws them as bars.
"""

from __future__ import annotations

from typing import Any


def _batch(args, model):
    from mechjax import tasks

    tok = model.tokenizer
    if args.clean is not None:
        missing = [k for k in ("corrupt", "answer", "wrong") if getattr(args, k) is None]
        if missing:
            raise SystemExit(f"--clean needs --{', --'.join(missing)} too")
        return tasks.from_pair(tok, args.clean, args.corrupt, args.answer, args.wrong)
    t = args.task
    if t == "induction":
        return tasks.induction(
            model.config.d_vocab,
            args.n,
            args.seed,
            bos=getattr(tok, "bos_token_id", None) if tok else None,
        )
    if tok is None:
        raise SystemExit(f"task {t!r} needs a tokenizer; this model has none")
    if t in ("ioi", "ioi-abc"):
        return tasks.ioi(
            tok, args.n, args.seed, counterfactual="abc" if t == "ioi-abc" else "s2_io_flip"
        )
    if t == "arithmetic":
        return tasks.arithmetic(tok, args.n, args.seed)
    if t == "number-retrieval":
        return tasks.number_retrieval(tok, args.n, args.seed, data_dir=args.data_dir)
    if t == "factual":
        return tasks.factual_recall(tok, args.n, args.seed)
    return tasks.greater_than(tok, args.n, args.seed)


METRIC_NOTE = "logit diff answer - wrong, normalised: 0 = corrupted, 1 = clean"
EDGE_NOTE = (
    "edge names: aL.hH = head H of layer L, mL = MLP L, input = the token embeddings, "
    "logits = the unembedding; a destination aL.hH<q>, <k>, <v> is that head's query, key "
    "or value input (a3.h2 -> a5.h1<q>: head 2 of layer 3 into the query input of head 1 "
    "of layer 5)"
)


def _use_named(args, batch) -> bool:
    """Sweep over the batch's named positions (one index per row) or absolute positions:
    `--positions auto` takes the named ones when the rows' layouts differ."""
    how = getattr(args, "positions", "auto") or "auto"
    if how == "named" and not batch.positions:
        raise SystemExit("--positions named: this batch has no named positions")
    return how == "named" or (how == "auto" and bool(batch.positions) and not batch.aligned)


def cmd_patch(args) -> int:
    import numpy as np

    import mechjax as mj
    from mechjax import patching, plotting

    model = mj.load(args.model)
    batch = _batch(args, model)
    named = _use_named(args, batch)
    if named and not batch.aligned and getattr(args, "positions", "auto") == "auto":
        print(
            "the rows' named positions differ (templates of different layouts): sweeping "
            f"over the named positions {list(batch.positions)}, one index per row"
        )
    res = patching.patch_sweep(
        model,
        batch.clean,
        batch.corrupted,
        batch.logit_diff(),
        args.site,
        mode=args.mode,
        per_position=not args.all_positions,
        positions=batch.positions if named else None,
    )
    tok = model.tokenizer
    if named:
        labels = list(res.position_labels or ())
    else:  # what each absolute column holds in every row (names where rows differ)
        labels = [] if tok is None else batch.position_labels(tok)
    np.savez(
        args.out,
        grid=np.asarray(res.grid),
        normalized=np.asarray(res.normalized()),
        clean_metric=float(res.clean_metric),
        corrupted_metric=float(res.corrupted_metric),
        axes=np.asarray(res.axes),
        tokens=np.asarray(labels),
        positions=np.asarray([] if res.positions is None else res.positions),
        layers=res.layers,
    )
    print(
        f"clean {float(res.clean_metric):.4f}  corrupted {float(res.corrupted_metric):.4f}  "
        f"grid {tuple(res.grid.shape)} {res.axes} -> {args.out}"
    )
    if args.png:
        g = np.asarray(res.normalized())
        # [layer, pos] grids are labelled by position; [layer, pos, head] grids are summed
        # over positions, leaving heads as the columns
        by_pos = g.ndim == 2 and res.axes[1:2] == ("pos",)
        summed = " (summed over positions)" if g.ndim == 3 else ""
        if g.ndim == 3:
            g = g.sum(1)
        what = args.task if args.clean is None else "one pair"
        plotting.heatmap(
            g,
            args.png,
            xticklabels=labels if labels and by_pos else None,
            xlabel=("named position" if named else "position") if by_pos else res.axes[-1],
            title=f"{args.model}, {what}: {args.site} patching ({args.mode}){summed}\n"
            + METRIC_NOTE,
            cbar_label="normalised logit diff",
        )
        print(f"figure -> {args.png}")
    return 0


def _edge_figure(top, path, title: str) -> str:
    """The strongest edges as horizontal bars (one per edge, signed score)."""
    from mechjax import plotting

    names = [f"{s} -> {d}" for s, d, _ in top][::-1]
    vals = [v for _, _, v in top][::-1]
    fig, ax = plotting.subplots(figsize=(7, 1.5 + 0.3 * len(top)))
    ax.barh(range(len(top)), vals, color=["tab:red" if v > 0 else "tab:blue" for v in vals])
    ax.set_yticks(range(len(top)), names, fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("edge score (estimated change of the loss -logit diff; sign as computed)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


def cmd_attribute(args) -> int:
    import numpy as np

    import mechjax as mj
    from mechjax import attribution, circuits, metrics, plotting

    model = mj.load(args.model)
    batch = _batch(args, model)
    metric = batch.logit_diff()
    if args.method in ("atp", "atp-gd"):
        scores = attribution.atp(
            model, batch.clean, batch.corrupted, metric, grad_drop=args.method == "atp-gd"
        )
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in scores.items()}
        np.savez(args.out, **arrays)
        print(f"{len(scores)} node sites -> {args.out}")
        if args.png:
            n = model.config.n_layers
            heads = np.stack(
                [np.asarray(scores[f"blocks.{l}.attn.hook_z"]).sum(0) for l in range(n)]
            )
            plotting.layer_head(heads, args.png, title=f"AtP per head ({args.task})")
        return 0
    loss = metrics.Negate(metric)  # EAP-IG's loss=True convention
    if args.method == "eap":
        scores, graph = circuits.eap(model, batch.clean, batch.corrupted, loss)
    else:
        variant = "activations" if args.method == "eap-ig-act" else "inputs"
        scores, graph = circuits.eap_ig(
            model, batch.clean, batch.corrupted, loss, steps=args.steps, variant=variant
        )
    np.savez(
        args.out,
        scores=np.asarray(scores),
        valid=graph.valid,
        src=np.asarray(graph.src),
        dst=np.asarray(graph.dst),
    )
    top = sorted(graph.edges(scores), key=lambda e: -abs(e[2]))[:20]
    print(EDGE_NOTE)
    for s, d, v in top[:10]:
        print(f"{s:>10} -> {d:<14} {v:+.4f}")
    print(f"{graph.n_edges} edges -> {args.out}")
    if args.png:
        _edge_figure(
            top,
            args.png,
            f"{args.model}, {args.task}: {args.method} top {len(top)} edges by |score|\n"
            "aL.hH = head H of layer L, mL = MLP L, <q>/<k>/<v> = that head's input",
        )
        print(f"figure -> {args.png}")
    return 0
