"""`mechjax neuron MODEL LAYER NEURON`: what one neuron responds to and what it writes.

Two views of a neuron, as in neuron-level studies (e.g. Geva et al. 2022, "Transformer
Feed-Forward Layers Build Predictions by Promoting Concepts in the Vocabulary Space";
Bills et al. 2023): its top-activating contexts over the offline corpus
(`mechjax.corpus`), each with the activation and the token marked; and, from the weights
alone (`mechjax.neurons`), the norm of its output row `w_out`, its LogitVar and null-space
share rho, and the tokens that row boosts and suppresses through the unembedding with the
final norm's gain folded in (Llama, GPT-2: `w`; Gemma 3: `1 + w`, with the post-MLP norm's
`1 + w` on the row). The norms' scales depend on the whole residual stream and are left
out, so the logit view is a direction, not the neuron's exact effect.
"""

from __future__ import annotations

import sys
import time


def _check(model, name: str, layer: int, neuron: int, site: str) -> str:
    """The full site name, or MechjaxError for a layer, site or neuron out of range."""
    from mechjax import harvest
    from mechjax.errors import InputError

    n_layers = model.config.n_layers
    if not 0 <= layer < n_layers:
        raise InputError(f"layer {layer} is out of range for {name}: valid 0..{n_layers - 1}")
    full = harvest.block_site(model, layer, site)
    width = harvest.site_width(model, full)
    if not 0 <= neuron < width:
        raise InputError(
            f"neuron {neuron} is out of range for layer {layer} of {name}: valid 0..{width - 1}"
        )
    return full


def cmd_neuron(args) -> int:

    import mechjax as mj
    from mechjax import corpus, harvest
    from mechjax.progress import show_progress

    t0 = time.perf_counter()
    model = mj.load(args.model)
    site = _check(model, args.model, args.layer, args.neuron, args.site)
    docs = corpus.documents(args.sources)
    tokens = corpus.token_chunks(
        model, docs, ctx_len=args.ctx_len, n_chunks=args.n_chunks, seed=args.seed
    )
    top = harvest.top_activating(
        model,
        tokens,
        args.layer,
        [args.neuron],
        k=args.k,
        site=site,
        batch_size=args.batch_size,
        progress=False if args.quiet else None,
    )
    print(f"neuron {args.neuron} of layer {args.layer} of {args.model} ({site})")
    print(
        f"corpus: {tokens.shape[0]} chunks x {tokens.shape[1]} tokens from "
        f"{', '.join(args.sources)} ({len(docs)} documents), seed {args.seed}"
    )
    print(f"\ntop {top.values.shape[1]} activations (value, chunk, position, context):")
    for j in range(top.values.shape[1]):
        v, s, p = float(top.values[0, j]), int(top.seq[0, j]), int(top.pos[0, j])
        text = harvest.context(model, tokens, s, p, stream=sys.stdout)
        print(f"  {j + 1:3d}  {v:9.4f}  chunk {s:5d} pos {p:4d}  {text}")
    if site.endswith(("mlp.hook_post", "mlp.hook_pre", "mlp.hook_pre_linear")):
        from mechjax import neurons

        stats = neurons.weight_stats(model, [args.layer])
        top_k = neurons.neuron_logits(model, args.layer, args.neuron, k=10)
        show = lambda ids, vals: ", ".join(  # noqa: E731
            f"{s!r} {v:+.3f}" for s, v in zip(model.to_str_tokens(ids), vals)
        )
        i = args.neuron
        print(
            f"\noutput weights: |w_out| = {stats.norm[0, i]:.4f}, LogitVar "
            f"{stats.logit_var[0, i]:.3g}, null-space share rho = {stats.rho[0, i]:.3f} "
            f"(k = {stats.k})"
        )
        print(
            "tokens through the unembedding (w_out, times the post-MLP norm's gain where "
            "there is one, @ W_U with the final norm's gain folded in, centered over the "
            "vocabulary):"
        )
        print(f"  boosted:    {show(top_k.boosted, top_k.boosted_values)}")
        print(f"  suppressed: {show(top_k.suppressed, top_k.suppressed_values)}")
    if show_progress(False if args.quiet else None):  # timings only on a terminal
        print(f"[{time.perf_counter() - t0:.1f}s]", file=sys.stderr)
    return 0
