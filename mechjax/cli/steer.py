"""`mechjax steer MODEL --instruction ID --layer L "prompt"`: a steered and an unsteered
completion side by side.

The steering vector of the instruction is computed on the spot (Stolfo et al. 2025):
`--pairs` instruction-free IFEval queries with and without an instruction sentence of
that id (from the paper's shipped data, `mechjax.steering.data`), the difference of mean
`resid_post` at the last prompt token of layer L. `adjust_rs` (the default) sets the
residual stream's projection on the unit direction to the mean with-instruction value at
every position and decoding step; `--mode add --weight W` adds W times the unit direction
(W in units of the vector's norm with `--relative`). Both completions are greedy and are
generated together, in one compiled loop. With `--check`, each is scored by the
instruction's IFEval-style checker (the kwargs of the first example of that id).
"""

from __future__ import annotations


def _kwargs_for(iid: str) -> dict:
    from mechjax import steering as st

    for e in st.data.format_examples():
        if e.instruction_id == iid:
            return e.kwargs
    return {}


def cmd_steer(args) -> int:
    import mechjax as mj
    from mechjax import steering as st
    from mechjax.errors import InputError

    ids = sorted({e.instruction_id for e in st.data.format_examples()})
    if args.instruction not in ids:
        raise InputError(
            f"no steering data for instruction {args.instruction!r}; valid: {', '.join(ids)}"
        )
    st.ifeval.require_checkable([args.instruction]) if args.check else None
    model = mj.load(args.model)
    n_layers = model.config.n_layers
    if not 0 <= args.layer < n_layers:
        raise InputError(
            f"layer {args.layer} is out of range for {args.model}: valid 0..{n_layers - 1}"
        )
    if args.mode == "add" and args.weight is None:
        raise InputError("--mode add needs --weight W")
    exs = st.data.format_examples(args.instruction)
    keys = [e.key for e in st.data.format_examples()]
    queries, _ = st.data.split_base(args.pairs, 0, exclude_keys=keys, seed=args.seed)
    w, wo, _ = st.data.augmented_pairs(exs, queries, seed=args.seed)
    vecs = st.compute_vectors(model, w, wo, layers=[args.layer], template=args.template)
    if args.mode == "adjust":
        steer = st.adjust_at(vecs, args.layer)
        what = f"adjust_rs at layer {args.layer} (projection set to {steer.coeff:.3f})"
    else:
        weight = args.weight * float(vecs.norm[0]) if args.relative else args.weight
        steer = st.add_at(vecs, args.layer, weight)
        what = f"add_vector at layer {args.layer} (w = {weight:.3f}, |u| = {vecs.norm[0]:.3f})"
    toks = st.encode_prompts(model, [args.prompt], args.template)
    gen = st.generate_candidates(model, toks * 2, [[], [steer]], args.max_new_tokens)
    assert gen.texts is not None
    print(f"{args.model}: {args.instruction}, {what}, vector from {vecs.n_pairs} pairs")
    kw = _kwargs_for(args.instruction)
    for label, text in (("unsteered", gen.texts[0]), ("steered", gen.texts[1])):
        mark = ""
        if args.check:
            ok = st.ifeval.check(args.instruction, text, kw)
            mark = f"  [{'follows' if ok else 'does not follow'} the instruction]"
        print(f"\n--- {label}{mark}\n{text}")
    return 0
