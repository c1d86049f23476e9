"""`mechjax reproduce entropy-neurons`: "Confidence Regulation Neurons in Language Models"
(Stolfo, Wu, Gurnee, Belinkov, Song, Sachan, Nanda, NeurIPS 2024) on SmolLM2-135M and
Gemma 3 270M.

    mechjax reproduce entropy-neurons --out DIR [--quick] [--models smollm2-135m gemma3-270m]

Per model, one stage each (results.json rewritten after every stage, `"complete": false`
until the end):

1. weights: norm, LogitVar and rho (k = 1% of d_model, and k = 40 as the paper's code)
   of every last-layer neuron; entropy neurons = the 10 with the largest rho (the code's
   `get_potential_entropy_neurons_udark`, top 10);
2. ablations: the entropy neurons and 10 random last-layer neurons mean-ablated on
   256-token chunks of the offline corpus (`mechjax.corpus`), total vs direct (frozen
   final-norm scale; Gemma 3 also freezes the last layer's post-MLP norm), on loss and
   entropy; the LN-mediated fraction per neuron;
3. token frequency: the unigram distribution of the corpus under the model's tokenizer,
   the unigram direction; candidates = the 30 last-layer neurons whose logit write is most
   aligned (|cos|) with it, plus the random neurons; each mean-ablated with the logits'
   unigram projection held at its clean value; token-frequency neurons = candidates whose
   unigram-mediated fraction is at least 0.5, largest first (at most 10);
4. induction: BOS + 100 random tokens repeated; the entropy neurons' activations on the
   first and the repeated half; the top entropy neuron mean-ablated (corpus mean) on the
   repeated half; the 3 heads with the largest induction score BOS-ablated on the repeated
   half, and the change in the entropy neurons' activations and in the loss.

Departures from the paper (said in report.md too): C4 is not available offline, so the
text is the offline corpus (Python's documentation prose); the models are SmolLM2-135M
and Gemma 3 270M from dequantized GGUF files, not GPT-2/Pythia/LLaMA2; the token-frequency
scan covers candidates, not all neurons; induction uses uniform random token ids.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
N_TOP = 10


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:  # seconds per model, for tests: numbers not meaningful
        return {
            "ctx_len": 64,
            "n_chunks": 2,
            "unigram_chunks": 1,
            "n_candidates": 4,
            "induction_n": 3,
            "induction_len": 16,
            "seed": 0,
        }
    return {
        "ctx_len": 256,
        "n_chunks": 6 if quick else 20,
        "unigram_chunks": 3 if quick else 8,
        "n_candidates": 12 if quick else 30,
        "induction_n": 16 if quick else 100,
        "induction_len": 100,
        "seed": 0,
    }


def _pairs(layer: int, ids) -> list[list[int]]:
    return [[int(layer), int(i)] for i in ids]


def _weights(model, out: Path, name: str) -> dict:
    from mechjax import neurons as nr

    L = model.config.n_layers - 1
    stats = nr.weight_stats(model, [L])
    stats40 = nr.weight_stats(model, [L], k=min(40, model.config.d_model))
    top = [n for _, n in stats.top(N_TOP)]
    norm, lvar, rho = stats.norm[0], stats.logit_var[0], stats.rho[0]
    # the norm written into the null space, rho * ||w_out||: large for neurons that are both
    # high-norm and null-space-aligned, the paper's description of entropy neurons
    null_norm = [int(i) for i in np.argsort(-(rho * norm), kind="stable")[:N_TOP]]
    pct = lambda v, i: float((v < v[i]).mean() * 100)  # noqa: E731  percentile of neuron i
    _scatter(out / f"{name}_norm_logitvar.png", name, norm, lvar, top, null_norm)
    _rho_plot(out / f"{name}_rho.png", name, rho, stats.k, top)
    return {
        "layer": L,
        "k": stats.k,
        "entropy_neurons": _pairs(L, top),
        "entropy_neurons_by_null_norm": _pairs(L, null_norm),
        "norm_percentile_null_norm": [pct(norm, i) for i in null_norm],
        "rho_null_norm": [float(rho[i]) for i in null_norm],
        "rho_top": [float(rho[i]) for i in top],
        "rho_k40_top": [float(stats40.rho[0][i]) for i in top],
        "rho_median": float(np.median(rho)),
        "rho_expected_random": float(np.sqrt(stats.k / model.config.d_model)),
        "norm_percentile_top": [pct(norm, i) for i in top],
        "logit_var_percentile_top": [pct(lvar, i) for i in top],
        "norm_median": float(np.median(norm)),
        "logit_var_median": float(np.median(lvar)),
    }


def _scatter(path, name, norm, lvar, top, nn) -> None:
    from mechjax import plotting

    fig, ax = plotting.subplots(figsize=(5, 3.8))
    ax.scatter(norm, lvar, s=4, c="#636EFA", label="last-layer neurons")
    ax.scatter(norm[top], lvar[top], s=18, c="#EF553B", label=f"top {len(top)} by rho")
    ax.scatter(norm[nn], lvar[nn], s=18, marker="x", c="k", label="top by rho x norm")
    ax.set_yscale("log")
    ax.set_xlabel("||w_out||")
    ax.set_ylabel("LogitVar")
    ax.set_title(f"{name}: norm vs LogitVar")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _rho_plot(path, name, rho, k, top) -> None:
    from mechjax import plotting

    fig, ax = plotting.subplots(figsize=(5, 3.4))
    order = np.argsort(-rho)
    ax.plot(np.arange(len(rho)), rho[order], lw=1)
    ax.scatter(np.arange(len(top)), rho[top], s=14, c="#EF553B")
    ax.set_xscale("log")
    ax.set_xlabel("neuron rank by rho")
    ax.set_ylabel(f"rho (k = {k})")
    ax.set_title(f"{name}: share of ||w_out|| in the unembedding's null space")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _summary(eff, rows) -> dict:
    """Per-neuron means of one ablation run, in `rows` order."""
    frac = eff.ln_mediated_fraction()
    m = lambda x: np.abs(x).reshape(x.shape[0], -1).mean(1)  # noqa: E731
    return {
        "neurons": rows,
        "ln_mediated_fraction": frac.round(4).tolist(),
        "abs_d_loss_total": m(eff.d_loss_total).round(5).tolist(),
        "abs_d_loss_direct": m(eff.d_loss_direct).round(5).tolist(),
        "abs_d_entropy_total": m(eff.d_entropy_total).round(5).tolist(),
        "abs_d_entropy_direct": m(eff.d_entropy_direct).round(5).tolist(),
        "d_entropy_total_mean": eff.d_entropy_total.reshape(len(rows), -1)
        .mean(1)
        .round(5)
        .tolist(),
    }


def _ablations(model, tokens, weights, rng) -> tuple[dict, np.ndarray, np.ndarray]:
    """Entropy neurons (top rho), top rho x norm, and random neurons, mean-ablated."""
    from mechjax import neurons as nr

    L = weights["layer"]
    top = [n for _, n in weights["entropy_neurons"]]
    nn = [n for _, n in weights["entropy_neurons_by_null_norm"]]
    pool = np.setdiff1d(np.arange(model.config.d_mlp), top + nn)
    rand = np.sort(rng.choice(pool, N_TOP, replace=False))
    ids = top + nn + rand.tolist()
    eff = nr.ablation_effects(model, tokens, L, ids)
    s = _summary(eff, _pairs(L, ids))
    frac = np.asarray(s["ln_mediated_fraction"])
    groups = {"top": slice(0, N_TOP), "null_norm": slice(N_TOP, 2 * N_TOP)}
    groups["random"] = slice(2 * N_TOP, 3 * N_TOP)
    for g, sl in groups.items():
        s[f"ln_mediated_fraction_{g}"] = float(frac[sl].mean())
        s[f"ln_mediated_fraction_{g}_median"] = float(np.median(frac[sl]))
        s[f"abs_d_entropy_{g}"] = float(np.mean(s["abs_d_entropy_total"][sl]))
        s[f"abs_d_loss_{g}"] = float(np.mean(s["abs_d_loss_total"][sl]))
    s["n_tokens"] = int(eff.loss.size)
    return s, rand, eff.means[:N_TOP]


def _token_frequency(model, tokens, counts, weights, rand) -> dict:
    from mechjax import neurons as nr

    L = weights["layer"]
    u, logp = nr.unigram_direction(counts)
    writes = np.asarray(nr._writes(model, L) @ nr.effective_unembed(model))  # [d_mlp, V]
    cos = writes @ np.asarray(u) / np.linalg.norm(writes, axis=1)
    n_cand = weights["n_candidates"]
    cand = [int(i) for i in np.argsort(-np.abs(cos))[:n_cand]]
    ids = cand + [int(i) for i in rand if int(i) not in cand]
    eff = nr.ablation_effects(model, tokens, L, ids, unigram=(u, logp))
    frac = eff.unigram_mediated_fraction()
    assert eff.kl_unigram_total is not None and eff.kl_unigram is not None
    kl_shift = (eff.kl_unigram_total - eff.kl_unigram[None]).reshape(len(ids), -1).mean(1)
    is_cand = np.arange(len(ids)) < len(cand)
    order = [int(i) for i in np.argsort(-frac) if is_cand[i]]
    picked = [i for i in order if frac[i] >= 0.5][:N_TOP]
    return {
        "candidates": _pairs(L, cand),
        "cos_unigram": [float(cos[i]) for i in cand],
        "unigram_mediated_fraction": frac.round(4).tolist(),
        "kl_to_unigram_shift": kl_shift.round(5).tolist(),
        "neurons": _pairs(L, ids),
        "token_frequency_neurons": _pairs(L, [ids[i] for i in picked]),
        "ranked": [[L, ids[i], round(float(frac[i]), 3)] for i in order],
        "unigram_mediated_fraction_candidates_mean": float(frac[is_cand].mean()),
        "unigram_mediated_fraction_random_mean": float(frac[~is_cand].mean()),
        "unigram_entropy_nats": float(-(np.exp(np.asarray(logp)) * np.asarray(logp)).sum()),
    }


def _rep_step(model, toks, hooks, site: str, neurons, spans: tuple):
    """Per sequence: the neurons' mean activation on each copy, the repeat's mean loss."""
    import jax
    import jax.numpy as jnp

    import mechjax as mj

    (f0, f1), (s0, s1), (r0, r1) = spans
    out = mj.run(model, toks, hooks, capture=(site,))
    act = out.cache[site][..., neurons]
    logp = jax.nn.log_softmax(out.logits[:, r0:r1], axis=-1)
    tg = toks[:, r0 + 1 : r1 + 1]
    loss = -jnp.take_along_axis(logp, tg[..., None], -1)[..., 0]
    return act[:, f0:f1].mean(1), act[:, s0:s1].mean(1), loss.mean(1)


def _rep_stats(model, toks, hooks, site, neurons, spans, batch: int = 4) -> dict:
    """`_rep_step` over batches of one shape (one compile), averaged over sequences."""
    import jax
    import jax.numpy as jnp

    step = jax.jit(_rep_step, static_argnums=(3, 5))
    parts = []
    for i in range(0, toks.shape[0], batch):
        chunk = toks[i : i + batch]
        real = chunk.shape[0]
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - real, 0)])
        res = jax.device_get(step(model, jnp.asarray(chunk), hooks, site, neurons, spans))
        parts.append([np.asarray(x)[:real] for x in res])
    a1, a2, loss = (np.concatenate([p[j] for p in parts]).mean(0) for j in range(3))
    return {"first": a1, "repeat": a2, "loss_repeat": float(loss)}


def _induction(model, weights, means, settings) -> dict:
    import jax.numpy as jnp

    from mechjax import neurons as nr

    L, T = weights["layer"], settings["induction_len"]
    top = [n for _, n in weights["entropy_neurons"]][:3]
    bos = getattr(model.tokenizer, "bos_token_id", None)
    toks = nr.induction_tokens(model, settings["induction_n"], T, seed=settings["seed"], bos=bos)
    p0 = toks.shape[1] - 2 * T  # 1 with a BOS prefix
    # activations: each copy without its first token; predictions whose target lies in the
    # second copy (its first token excluded: it cannot be predicted)
    spans = ((p0 + 1, p0 + T), (p0 + T + 1, p0 + 2 * T), (p0 + T, p0 + 2 * T - 1))
    site = f"blocks.{L}.mlp.hook_post"
    ids = jnp.asarray(top)
    clean = _rep_stats(model, toks, None, site, ids, spans)
    eff = nr.ablation_effects(model, toks, L, [top[0]], means=[float(means[0])])
    rep = slice(*spans[2])
    scores = nr.induction_head_scores(model, toks, T)
    flat = np.argsort(-scores.ravel())[:3]
    heads = [[int(i // scores.shape[1]), int(i % scores.shape[1])] for i in flat]
    abl = _rep_stats(model, toks, nr.bos_ablation(heads, start=p0 + T), site, ids, spans)
    return {
        "bos": bos,
        "n_sequences": int(toks.shape[0]),
        "length": T,
        "entropy_neurons": _pairs(L, top),
        "activation_first_half": clean["first"].round(4).tolist(),
        "activation_repeated_half": clean["repeat"].round(4).tolist(),
        "loss_repeated_clean": clean["loss_repeat"],
        "entropy_repeated_clean": float(eff.entropy[:, rep].mean()),
        "entropy_first_clean": float(eff.entropy[:, p0 : p0 + T - 1].mean()),
        "ablate_top_d_entropy_repeated": float(eff.d_entropy_total[0][:, rep].mean()),
        "ablate_top_d_loss_repeated": float(eff.d_loss_total[0][:, rep].mean()),
        "induction_heads": heads,
        "induction_scores": [float(scores[l, h]) for l, h in heads],
        "bos_ablation_activation_repeated": abl["repeat"].round(4).tolist(),
        "bos_ablation_loss_repeated": abl["loss_repeat"],
    }


def _model_stages(stages, name: str, settings: dict, out: Path, results: dict) -> None:
    import mechjax as mj
    from mechjax import corpus

    log = stages.log
    model = mj.load(name)
    rng = np.random.RandomState(settings["seed"])
    r: dict = {"d_mlp": int(model.config.d_mlp), "n_layers": int(model.config.n_layers)}
    with stages.stage(f"{name}: weights"):
        w = _weights(model, out, name)
    w["n_candidates"] = settings["n_candidates"]
    r["weights"] = w
    r["entropy_neurons"] = w["entropy_neurons"]
    log(f"  {name}: entropy neurons (top rho) {w['entropy_neurons'][:5]} ...")
    results[name] = r
    stages.save({name: r})
    with stages.stage(f"{name}: ablations"):
        docs = corpus.documents()
        tokens = corpus.token_chunks(
            model, docs, ctx_len=settings["ctx_len"], n_chunks=settings["n_chunks"], seed=0
        )
        abl, rand, means = _ablations(model, tokens, w, rng)
    r["ablations"] = abl
    r["ln_mediated_fraction_top"] = abl["ln_mediated_fraction_top"]
    r["ln_mediated_fraction_random"] = abl["ln_mediated_fraction_random"]
    log(
        f"  {name}: LN-mediated fraction top {abl['ln_mediated_fraction_top']:.3f}, "
        f"random {abl['ln_mediated_fraction_random']:.3f}"
    )
    stages.save({name: r})
    with stages.stage(f"{name}: token frequency"):
        counts = corpus.unigram_counts(model, docs, d_vocab=model.config.d_vocab)
        tf = _token_frequency(model, tokens[: settings["unigram_chunks"]], counts, w, rand)
    tf["corpus_tokens"] = int(counts.sum())
    r["token_frequency"] = tf
    r["token_frequency_neurons"] = tf["token_frequency_neurons"]
    log(f"  {name}: token-frequency neurons {tf['token_frequency_neurons']}")
    stages.save({name: r})
    with stages.stage(f"{name}: induction"):
        r["induction"] = _induction(model, w, means, settings)
    ind = r["induction"]
    log(
        f"  {name}: top entropy neuron activation {ind['activation_first_half'][0]:.3f} -> "
        f"{ind['activation_repeated_half'][0]:.3f} on the repeat"
    )
    stages.save({name: r})


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    models: Sequence[str] = DEFAULT_MODELS,
    smoke: bool = False,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Run every stage for every model; write results.json, figures and report.md.

    `smoke`: a seconds-long run of every stage (tests; numbers not meaningful)."""
    from mechjax.analyses.entropy_neurons.report import write_report
    from mechjax.analyses.stages import Stages

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke), "smoke": smoke}
    t0 = time.time()
    results: dict = {}
    with Stages(out / "results.json", 4 * len(models), progress=progress, log=log) as stages:
        stages.save({"settings": {**settings, "quick": quick, "models": list(models)}})
        for name in models:
            _model_stages(stages, name, settings, out, results)
        meta: dict = {"settings": {**settings, "quick": quick, "models": list(models)}}
        meta["seconds"] = round(time.time() - t0, 1)
        write_report(out, results, meta)
        final = stages.finish({**results, **meta})
    log(f"wrote {out / 'report.md'} and {out / 'results.json'} in {meta['seconds']:.0f}s")
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    return reproduction_parser(
        "entropy-neurons",
        "Reproduce 'Confidence Regulation Neurons in Language Models'.",
        quick_help="fewer tokens and sequences (minutes)",
        models=DEFAULT_MODELS,
        out_help="output folder (report.md, results.json, PNGs)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce entropy-neurons --out DIR [--quick] [--models ...]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce)


if __name__ == "__main__":
    raise SystemExit(main())
