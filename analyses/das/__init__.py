"""Reproduction: MIB's causal-variable track (Mueller et al. 2025), DAS and its relatives.

Paper 12 of the reference list. The track localises a high-level causal variable in a
language model: a featurizer (neurons, PCA, DAS's learned rotation, boundless DAS, SAE
features) is fitted at a site, interchange interventions swap the variable's features from
a source prompt into a base prompt, and IIA (interchange intervention accuracy) is the
fraction of held-out pairs where the intervened model outputs what the causal model
predicts. The paper's finding: supervised DAS is best; SAE features are not better than
neurons.

What runs here:

1. A toy model (`toy.py`) trained with `mechjax.training`, where the intermediate
   variable sits at a known site by construction: IIA at the right site, at a wrong site
   and for a wrong variable.
2. SmolLM2-135M (and Gemma 3 270M in the full run): IIA per layer of `resid_pre` at the
   last token for DAS (k directions), boundless DAS, PCA (k components) and differential
   binary masking over neurons, for IOI's `io_position` and `io_name` variables (the
   counterfactual datasets of `mechjax.causal.causal_models`), on pairs whose base prompt
   the model answers right (MIB filters the same way).

Fidelity: MIB's datasets, models (GPT-2, Qwen2.5, Gemma 2, Llama 3.1) and SAEs are not
available offline. The tasks are rebuilt from their causal models (IOI with one template;
the answer is read as the next token), the models are the two offline ones, and SAE
features are compared with neurons and DAS only at the site of one SAE trained here
(`--sae DIR`, `sae_site.py`), not at every layer. MIB scores IOI by a logit-difference
MSE; here every variable is scored by IIA on the argmax token.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
VARIABLES = (("ioi", "io_position"), ("ioi", "io_name"))
FEATURIZERS = ("das", "boundless_das", "pca", "neurons_dbm")
# fewer base prompts answered right than this: keep every pair (and say so in the report)
MIN_ANSWERED = 24


def _settings(quick: bool, smoke: bool = False) -> dict:
    # k = 64: at k = 16 DAS does not carry the IO name (SmolLM2, layer 24, 300 steps: IIA
    # 0.14-0.17, the loss flat at 2.1), at k = 64 it reaches the full-patch ceiling (0.91);
    # boundless DAS learns its mask over `boundless_m` rotated directions, not all d (a
    # full d x d QR per step is most of a step's time)
    if smoke:
        return {"n": 48, "n_train": 32, "n_test": 16, "k": 4, "steps": 4, "batch": 8,
                "lr": 1e-2, "mask_lr": 5e-2, "toy": "smoke", "n_search_layers": 2,
                "boundless_m": 8}  # fmt: skip
    if quick:
        return {"n": 128, "n_train": 96, "n_test": 48, "k": 32, "steps": 20, "batch": 16,
                "lr": 3e-3, "mask_lr": 1e-1, "toy": "quick", "n_search_layers": 3,
                "boundless_m": 64}  # fmt: skip
    # Gemma 3 searches 4 layers, not 6: a step costs it about 2.5 times SmolLM2's (its
    # 262k-token unembedding), and the full run had to fit the machine's time
    return {"n": 320, "n_train": 256, "n_test": 96, "k": 64, "steps": 200, "batch": 32,
            "lr": 3e-3, "mask_lr": 5e-2, "toy": "full", "n_search_layers": 6,
            "layers_by_model": {"gemma3-270m": 4}, "boundless_m": 128}  # fmt: skip


def layers_of(n_layers: int, settings: dict, model_name: str = "") -> list[int]:
    """`n_search_layers` layers (or the model's own count in `layers_by_model`) evenly
    spaced from the first to the last."""
    k = (settings.get("layers_by_model") or {}).get(model_name, settings["n_search_layers"])
    k = min(k, n_layers)
    return sorted({int(round(x)) for x in np.linspace(0, n_layers - 1, k)})


def answered(model, data) -> np.ndarray:
    """Rows whose base prompt the model answers right (argmax at the last real token)."""
    import jax.numpy as jnp

    import mechjax as mj

    ok = []
    for s in range(0, len(data), 32):
        rows = data.rows(slice(s, s + 32))
        logits = mj.run(model, jnp.asarray(rows.base)).logits
        last = jnp.asarray(rows.base_lengths - 1)
        pred = np.asarray(jnp.argmax(logits[jnp.arange(len(rows)), last], -1))
        ok.append(pred == rows.base_labels)
    return np.concatenate(ok)


def base_vectors(model, data, layers, batch_size: int = 32) -> np.ndarray:
    """The bases' `resid_pre` of `layers` at their intervened position: `[n_layers, n, d]`
    (what PCA is fitted on)."""
    import mechjax as mj
    from mechjax import harvest

    if data.base_positions.shape[1] != 1:
        raise ValueError("base_vectors reads one intervened position per row")
    names = [mj.act_name("resid_pre", l) for l in layers]
    got = harvest.harvest(
        model,
        data.base,
        names,
        batch_size=batch_size,
        positions=data.base_positions[:, 0],
        progress=False,
    )
    return np.stack([got[n] for n in names])


def featurizer_inits(
    name: str, d: int, k: int, n_layers: int, pca_data, key, boundless_m: int | None = None
):
    """The initial featurizers of one kind, stacked over the searched layers (PCA fitted
    per layer on `pca_data [n_layers, m, d]`; boundless DAS over `boundless_m` rotated
    directions, default all d)."""
    import jax

    from mechjax.causal import das
    from mechjax.causal import featurizers as F

    keys = jax.random.split(key, n_layers)
    if name == "das":
        return das.stack([F.rotation(kk, d, k) for kk in keys])
    if name == "boundless_das":
        return das.stack([F.boundless_rotation(kk, d, boundless_m) for kk in keys])
    if name == "neurons_dbm":
        return das.stack([F.neuron_mask(d) for _ in keys])
    if name == "pca":  # fitted on the training bases' residuals at the intervened position
        return das.stack([F.pca(pca_data[i], k) for i in range(n_layers)])
    raise ValueError(f"featurizer {name!r}; valid: {FEATURIZERS}")


def split_pairs(model, task: str, var: str, settings: dict):
    """(train, test, row): the variable's counterfactual pairs, kept where the model
    answers the base prompt right (all of them if fewer than MIN_ANSWERED are), split into
    fixed-size train and test sets; `row` describes the split for details.json."""
    from mechjax.causal import causal_models as CM

    data = CM.pairs(task, model.tokenizer, var, n=settings["n"] + settings["n_test"], seed=0)
    ok = answered(model, data)
    filtered = int(ok.sum()) >= MIN_ANSWERED
    kept = data.rows(np.flatnonzero(ok)) if filtered else data
    # fixed train and test sizes whatever the filter keeps, so both variables share one
    # compiled program per featurizer
    n_test = min(settings["n_test"], len(kept) // 3)
    n_train = min(settings["n_train"], len(kept) - n_test)
    train = kept.rows(slice(0, n_train))
    test = kept.rows(slice(len(kept) - n_test, None))
    row: dict = {
        "n_pairs": len(data),
        "base_accuracy": float(ok.mean()),
        "filtered": filtered,
        "n_train": len(train),
        "n_test": len(test),
        "label_changes": float(np.mean(test.info["changes"])),
    }
    return train, test, row


def run_model(
    model, settings: dict, st, log, model_name: str = "", prior: dict | None = None
) -> dict:
    """IIA per layer of every featurizer on every variable, for one model. `prior`: this
    model's section of an earlier run with the same settings (`--resume`); a featurizer it
    holds for a variable is kept, not trained again."""
    import jax

    from mechjax.causal import das

    d, n_layers = model.config.d_model, model.config.n_layers
    layers = layers_of(n_layers, settings, model_name)
    prior = prior or {}
    # every kept result is in `out` (and so in each save) from the start: a resumed run
    # that stops early never drops what the earlier run finished
    out: dict = {"layers": layers, **{v: prior[v] for _, v in VARIABLES if v in prior}}
    for task, var in VARIABLES:
        done = prior.get(var, {})
        if all(f in done for f in FEATURIZERS):
            out[var] = done
            log(f"{var}: every featurizer kept from the earlier run")
            continue
        train, test, row = split_pairs(model, task, var, settings)
        log(
            f"{var}: base accuracy {row['base_accuracy']:.2f}, {len(train)} train / "
            f"{len(test)} test pairs"
        )
        train_acts = das.site_acts(model, train, layers)
        test_acts = das.site_acts(model, test, layers)
        pca_data = base_vectors(model, train, layers)
        for f in FEATURIZERS:
            if f in done:  # resumed: the earlier run's result for this featurizer
                row[f], row[f"{f}_seconds"] = done[f], done.get(f"{f}_seconds")
        out[var] = row
        cfg = das.TrainConfig(
            steps=settings["steps"],
            batch_size=settings["batch"],
            lr=settings["lr"],
            mask_lr=settings["mask_lr"],
        )
        for f in FEATURIZERS:
            if f in done:
                continue
            with st.stage(f"{model_name}: {var}: {f}"):
                t0 = time.perf_counter()
                inits = featurizer_inits(
                    f,
                    d,
                    settings["k"],
                    len(layers),
                    pca_data,
                    jax.random.PRNGKey(1),
                    settings.get("boundless_m"),
                )
                res = das.search(
                    model,
                    train,
                    test,
                    inits,
                    layers,
                    config=cfg,
                    train_acts=train_acts,
                    test_acts=test_acts,
                )
                row[f] = res["iia"]
                row[f"{f}_seconds"] = round(time.perf_counter() - t0, 1)
            log(f"  {f}: " + " ".join(f"L{l} {x:.2f}" for l, x in zip(layers, res["iia"])))
            out[var] = row
            st.save({model_name: out})  # each featurizer's result on disk as it comes
        out[var] = row
    return out


def results_table(details: dict, models) -> dict:
    """results.json's layout: toy IIAs, then model -> variable -> featurizer -> per layer."""
    toy = details.get("toy", {})
    out: dict = {
        "toy": {k: toy.get(k) for k in ("iia_right_site", "iia_wrong_site", "iia_wrong_variable")}
    }
    for m in models:
        if m not in details:
            continue
        out[m] = {"layers": details[m]["layers"]}
        for _, var in VARIABLES:
            if var in details[m]:
                out[m][var] = {f: details[m][var].get(f) for f in FEATURIZERS}
        sae = (details.get("sae") or {}).get(m)
        if sae:  # SAE features against neurons and DAS at the SAE's one site
            from mechjax.analyses.das.sae_site import SAE_FEATURIZERS

            out[m]["sae_site"] = {
                "site": sae["site"],
                "layer": sae["layer"],
                **{
                    var: {f: sae[var].get(f) for f in SAE_FEATURIZERS}
                    for _, var in VARIABLES
                    if var in sae
                },
            }
    return out


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    log=print,
    resume: bool = False,
    sae: str | Path | None = None,
) -> dict:
    """Every model, then the toy model; details.json, results.json and report.md.

    `resume`: keep what an earlier run with the same settings left in `out_dir/details.json`
    (every featurizer finished for a model and variable, and the toy model) and run only
    the rest. `sae`: a SAELens-format SAE directory of one of `models` (its cfg names the
    model and the site): SAE features against neurons and DAS at its site
    (`sae_site.py`).
    """
    import mechjax as mj
    from mechjax.analyses.das.report import write_report
    from mechjax.analyses.stages import Stages, prior_details, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke}
    t0 = time.time()
    meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
    the_sae = _load_sae(sae, models) if sae is not None else None
    if the_sae is not None:
        meta["settings"]["sae"] = {"path": str(sae), "model": the_sae.meta.model_name}
    prior = (
        prior_details(out / "details.json", meta["settings"], ("models", "sae")) if resume else {}
    )
    details: dict = {}
    n_stages = 1 + len(models) * len(VARIABLES) * len(FEATURIZERS)
    n_stages += 0 if the_sae is None else len(VARIABLES) * 3  # sae_site.SAE_FEATURIZERS
    with Stages(out / "details.json", n_stages, progress=progress, log=log) as st:
        st.timings.update(prior.get("stage_seconds", {}))
        st.save(meta)
        # what the earlier run finished is on disk again before anything runs
        keep = [*models, "toy"] + (["sae"] if the_sae is not None else [])
        st.save({k: prior[k] for k in keep if k in prior})
        for name in models:
            model = mj.load(name)
            details[name] = run_model(model, settings, st, st.log, name, prior.get(name))
            st.save({name: details[name]})
            if the_sae is not None and the_sae.meta.model_name == name:
                from mechjax.analyses.das import sae_site

                got = sae_site.run(
                    model, the_sae, settings, st, st.log, name, prior.get("sae", {}).get(name)
                )
                details["sae"] = {name: got}
                st.save({"sae": details["sae"]})
        if "toy" in prior:
            details["toy"] = prior["toy"]
        else:
            with st.stage("toy model"):
                from mechjax.analyses.das import toy

                details["toy"] = toy.run(toy.SETTINGS[settings["toy"]], log=st.log)
        st.save({"toy": details["toy"]})
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details, models), "complete": True})
    write_report(out, final, meta)
    log(f"wrote {out / 'report.md'}, results.json and details.json in {meta['seconds']:.0f}s")
    return final


def _load_sae(path, models):
    """The SAE of `--sae`, checked to belong to one of the models run."""
    from mechjax import sae as S
    from mechjax.errors import InputError

    the_sae = S.load(path)
    if the_sae.meta.model_name not in models:
        raise InputError(
            f"--sae {path}: its cfg.json names model {the_sae.meta.model_name!r}, which is "
            f"not among the models run ({', '.join(models)})"
        )
    return the_sae


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "das",
        "Reproduce MIB's causal-variable track: DAS, boundless DAS, PCA and neuron masks.",
        quick_help="96 training pairs, 3 layers, 20 steps per featurizer",
        models=DEFAULT_MODELS,
    )
    ap.add_argument(
        "--sae",
        metavar="DIR",
        help="a SAELens-format SAE of one of the models (e.g. from `mechjax sae train`): "
        "SAE features against neurons and DAS at its site",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep what an earlier run with the same settings left in OUT and run the rest",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce das --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce, resume="resume", sae="sae")


if __name__ == "__main__":
    raise SystemExit(main())
