"""MIB's comparison of SAE features with neurons and DAS, at the site of a trained SAE.

MIB's causal-variable track finds that SAE features are not better than neurons at
localising a variable, and that supervised DAS is best. An SAE exists for one site only
(training one per layer is out of reach here), so this stage compares, at that site and
for each IOI variable, three featurizers trained on the same pairs with the same budget:

- `sae`: a learned mask over the SAE's latents (differential binary masking on SAE
  features, the SAE frozen; `causal.from_sae(sae, learned=True)`);
- `neurons_dbm`: the same learned mask over the residual stream's neurons;
- `das`: k learned orthonormal directions.

The SAE comes from `mechjax reproduce das --sae DIR` (a SAELens-format directory, as
`mechjax sae train` writes it); its site must be a residual stream of the model
(`hook_resid_pre` L, or `hook_resid_post` L, which is `resid_pre` L + 1).
"""

from __future__ import annotations

import time

from mechjax.errors import InputError

SAE_FEATURIZERS = ("sae", "neurons_dbm", "das")


def resid_pre_layer(hook_name: str, n_layers: int) -> int:
    """The `resid_pre` layer an SAE site reads (`resid_post` L is `resid_pre` L + 1)."""
    from mechjax import sites

    info = sites.parse(hook_name)
    if info.hook == "hook_resid_pre":
        layer = info.layer
    elif info.hook == "hook_resid_post":
        layer = info.layer + 1
    else:
        layer = None
    if layer is None or not 0 <= layer < n_layers:
        raise InputError(
            f"the SAE reads {hook_name!r}; the DAS reproduction intervenes on the residual "
            f"stream before a layer: an SAE of blocks.L.hook_resid_pre (L < {n_layers}) or "
            f"blocks.L.hook_resid_post (L < {n_layers - 1}) is needed"
        )
    return layer


def run(model, sae, settings: dict, st, log, model_name: str, prior: dict | None = None) -> dict:
    """IIA of `SAE_FEATURIZERS` at the SAE's layer for every variable of the reproduction.

    Returns `{"site", "layer", "d_sae", "<variable>": {"<featurizer>": iia, ...}}`;
    `prior` (an earlier run's section, `--resume`) keeps what it holds.
    """
    import jax

    from mechjax.analyses.das import VARIABLES, split_pairs
    from mechjax.causal import das
    from mechjax.causal import featurizers as F

    d = model.config.d_model
    if sae.d_in != d:
        raise InputError(f"the SAE reads width {sae.d_in}, but {model_name}'s d_model is {d}")
    layer = resid_pre_layer(sae.meta.hook_name, model.config.n_layers)
    prior = prior or {}
    out: dict = {"site": sae.meta.hook_name, "layer": layer, "d_sae": sae.d_sae}
    out.update({v: prior[v] for _, v in VARIABLES if v in prior})  # kept from the start
    cfg = das.TrainConfig(
        steps=settings["steps"],
        batch_size=settings["batch"],
        lr=settings["lr"],
        mask_lr=settings["mask_lr"],
    )
    inits = {
        "sae": lambda: F.from_sae(sae, learned=True),
        "neurons_dbm": lambda: F.neuron_mask(d),
        "das": lambda: F.rotation(jax.random.PRNGKey(1), d, settings["k"]),
    }
    for task, var in VARIABLES:
        done = prior.get(var, {})
        if all(f in done for f in SAE_FEATURIZERS):
            out[var] = done
            continue
        train, test, row = split_pairs(model, task, var, settings)
        train_acts = das.site_acts(model, train, [layer])
        test_acts = das.site_acts(model, test, [layer])
        row.update({k: v for k, v in done.items() if k not in row})  # kept results
        out[var] = row
        for f in SAE_FEATURIZERS:
            if f in done:
                continue
            with st.stage(f"{model_name}: {var}: {f} at the SAE's layer {layer}"):
                t0 = time.perf_counter()
                res = das.search(
                    model,
                    train,
                    test,
                    das.stack([inits[f]()]),
                    [layer],
                    config=cfg,
                    train_acts=train_acts,
                    test_acts=test_acts,
                )
                row[f] = res["iia"][0]
                row[f"{f}_seconds"] = round(time.perf_counter() - t0, 1)
            log(f"  {var} at layer {layer}: {f} {row[f]:.2f}")
            out[var] = row
            st.save({"sae": {model_name: out}})
        out[var] = row
    return out
