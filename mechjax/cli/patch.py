"""`mechjax patch` and `mechjax attribute`: patching grids and attribution scores.

    mechjax patch smollm2-135m --task ioi --site resid_pre --out ioi.npz [--png ioi.png]
    mechjax patch smollm2-135m --clean "..." --corrupt "..." --answer " Mary" --wrong " John" --out p.npz
    mechjax attribute smollm2-135m --task ioi --method eap-ig --out eap.npz

`patch` writes `grid` (the metric after each patch; denoising by default: the clean
activation patched into the corrupted run), `normalized`, `clean_metric`,
`corrupted_metric`, `axes` and `tokens`. The metric is logit[answer] - logit[wrong] at
the last position.
"""

from __future__ import annotations


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


def _labels(batch, model):
    tok = model.tokenizer
    return [] if tok is None else batch.str_tokens(tok)


def cmd_patch(args) -> int:
    import numpy as np

    import mechjax as mj
    from mechjax import patching, plotting

    model = mj.load(args.model)
    batch = _batch(args, model)
    res = patching.patch_sweep(
        model,
        batch.clean,
        batch.corrupted,
        batch.logit_diff(),
        args.site,
        mode=args.mode,
        per_position=not args.all_positions,
    )
    tokens = _labels(batch, model)
    np.savez(
        args.out,
        grid=np.asarray(res.grid),
        normalized=np.asarray(res.normalized()),
        clean_metric=float(res.clean_metric),
        corrupted_metric=float(res.corrupted_metric),
        axes=np.asarray(res.axes),
        tokens=np.asarray(tokens),
        layers=res.layers,
    )
    print(
        f"clean {float(res.clean_metric):.4f}  corrupted {float(res.corrupted_metric):.4f}  "
        f"grid {tuple(res.grid.shape)} {res.axes} -> {args.out}"
    )
    if args.png:
        g = np.asarray(res.normalized())
        # [layer, pos] grids keep their token labels; [layer, pos, head] grids are summed
        # over positions, leaving heads as the columns
        labels = tokens if tokens and g.ndim == 2 and res.axes[1:2] == ("pos",) else None
        if g.ndim == 3:
            g = g.sum(1)
        plotting.heatmap(
            g,
            args.png,
            xticklabels=labels,
            xlabel=res.axes[-1],
            title=f"{args.task} {args.site} ({args.mode}, normalised)",
        )
        print(f"figure -> {args.png}")
    return 0


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
        np.savez(args.out, **{k: np.asarray(v) for k, v in scores.items()})
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
    top = sorted(graph.edges(scores), key=lambda e: -abs(e[2]))[:10]
    for s, d, v in top:
        print(f"{s:>10} -> {d:<14} {v:+.4f}")
    print(f"{graph.n_edges} edges -> {args.out}")
    return 0
