"""Reproduction: "Dense SAE latents are features, not bugs" (Sun, Stolfo, Engels, Wu,
Rajamanoharan, Sachan, Tegmark; NeurIPS 2025, arXiv 2506.15679). Paper 11 of the list.

The paper's claims, and the numbers it reports (from a transcription of the paper; see
`shared` methods notes, section 11):

- (i) SAE latent densities have a dense tail: latents firing on 10-50% of tokens
  (about 150 latents with density > 0.1 in a 16k Gemma Scope SAE on Gemma 2 2B).
- (ii) Dense latents (density > 0.3) come in antipodal pairs, antipodality
  s_i = max_j cos(W_enc_i, W_enc_j) cos(W_dec_i, W_dec_j) > 0.9; an AbsoluteTopK SAE,
  whose latents may be negative, has none or far fewer.
- (iii) The dense subspace is a property of the activations: after projecting the span of
  the dense latents' decoder directions out of the activations and retraining, about 10
  dense latents remain (of about 150), against about 145 after ablating an equally
  sized set of sparse latents.
- (iv) One antipodal pair per layer lies along the first principal component of the
  residual stream (|cos| > 0.75).
- (v) Dense latents track position (Spearman |rho| with token position > 0.4, early
  layers), the null space of the unembedding (alignment > 0.2, late layers), the first
  letter of the next token (>= 90% of the top-100 boosted tokens share it), ...

What runs here, on SmolLM2-135M (the offline stand-in for Gemma 2 2B, GPT-2 and Llama
3.2): the residual stream after the middle block (`blocks.15.hook_resid_post`),
harvested once from the offline English corpus (`mechjax.corpus`, 400 chunks of 128
tokens, the first token of each left out, a tenth held out), a TopK SAE (4 x d_model =
2304 latents, k = 32, aux-k, 300 steps of 1024 activations) and an AbsoluteTopK SAE of
the same size, both evaluated on held-out chunks (FVU, CE loss
recovered with the SAE spliced in); then density, antipodality, the retraining after
dense and matched sparse ablation, and the detectors (position, null space of W_U,
alphabetic, PC1) on the dense latents.

Fidelity: the method is the paper's; the scale is not. The paper trains on hundreds of
millions of tokens of web text with 16k-32k latents on 2B-parameter models; this runs a
third of a million training tokens (about seven epochs over 46k tokens of Python's own
documentation), 2304 latents (a 4x expansion, not the 8x the methods note suggests:
training time on a shared 2-core CPU), on a 135M model, quantised (Q4_1). The
matched control ablates sparse latents whose span has the same dimension as the dense
span (the paper: an equal number of latents). Context-binding and part-of-speech
detectors need steering experiments and a tagger that are not offline; they are not run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "smollm2-135m"
DENSE = 0.3  # the antipodality analysis's threshold (claim ii)
COUNT_DENSE = 0.1  # the retraining table's threshold (claim iii)
ANTIPODAL = 0.9


def _settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:
        return {"ctx_len": 17, "n_chunks": 40, "d_sae": 64, "k": 4, "steps": 8, "retrain_steps": 6,
                "batch": 128, "lr": 3e-3, "warmup": 1, "eval_frac": 0.2, "ce_seqs": 8}  # fmt: skip
    if quick:
        return {"ctx_len": 64, "n_chunks": 320, "d_sae": 1152, "k": 32, "steps": 150,
                "retrain_steps": 80, "batch": 1024, "lr": 7e-4, "warmup": 15, "eval_frac": 0.1,
                "ce_seqs": 16}  # fmt: skip
    return {"ctx_len": 128, "n_chunks": 400, "d_sae": 2304, "k": 32, "steps": 300,
            "retrain_steps": 150, "batch": 1024, "lr": 1e-3, "warmup": 20, "eval_frac": 0.1,
            "ce_seqs": 16}  # fmt: skip


def _cfg(s: dict, arch: str, steps: int):
    from mechjax.sae import SAETrainConfig

    return SAETrainConfig(arch=arch, d_sae=s["d_sae"], k=s["k"], steps=steps, batch_size=s["batch"],
                          lr=s["lr"], warmup=s["warmup"], decay="linear", seed=0)  # fmt: skip


def _encode_rows(sae, x: np.ndarray, block: int = 4096) -> np.ndarray:
    """Latents of rows `x` in fixed-size blocks (one compiled program), on the host."""
    import jax
    import jax.numpy as jnp

    from mechjax.sae import encode

    enc = jax.jit(encode)
    out = []
    for s in range(0, len(x), block):
        part = x[s : s + block]
        pad = block - len(part)
        full = np.concatenate([part, np.zeros((pad, x.shape[1]), x.dtype)]) if pad else part
        out.append(np.asarray(enc(sae, jnp.asarray(full)))[: len(part)])
    return np.concatenate(out)


def density_of(sae, x: np.ndarray) -> np.ndarray:
    """Fraction of rows each latent is non-zero on."""
    f = _encode_rows(sae, x)
    return (f != 0).mean(0)


def outlier_fvu(sae, x: np.ndarray, block: int = 4096) -> dict:
    """The residual stream's largest-variance dimension's share of the variance, and the
    FVU over the other dimensions (SmolLM2's middle residual stream has one dimension
    with about 94% of the variance, which the plain FVU is dominated by)."""
    import jax
    import jax.numpy as jnp

    var = x.var(0)
    top = int(np.argmax(var))
    rest = np.arange(x.shape[1]) != top
    call = jax.jit(lambda s, v: s(v).recon)
    err = np.zeros(x.shape[1])
    for s in range(0, len(x), block):
        part = x[s : s + block]
        err += ((np.asarray(call(sae, jnp.asarray(part))) - part) ** 2).sum(0)
    total = var * len(x)
    return {"top_dim": top, "top_dim_var_share": float(var[top] / var.sum()),
            "fvu_other_dims": float(err[rest].sum() / total[rest].sum())}  # fmt: skip


def sae_summary(sae, density: np.ndarray) -> dict:
    """Dense counts and the dense latents' antipodality."""
    from mechjax.sae import dense

    anti = dense.antipodality(sae)
    d30 = np.flatnonzero(density > DENSE)
    return {
        "n_dense": int(len(d30)),
        "n_dense_0.1": int((density > COUNT_DENSE).sum()),
        "n_dead": int((density == 0).sum()),
        "median_antipodality_dense": float(np.median(anti.score[d30])) if len(d30) else None,
        "frac_dense_antipodal": float((anti.score[d30] > ANTIPODAL).mean()) if len(d30) else None,
        "median_antipodality_all": float(np.median(anti.score)),
        "antipodality": anti.score.tolist(),
        "partner": anti.partner.tolist(),
        "density": density.tolist(),
    }


def ablated(x: np.ndarray, basis: np.ndarray, block: int = 65536) -> np.ndarray:
    """x - (x Q) Q^T in blocks (float32)."""
    out = np.empty_like(x)
    for s in range(0, len(x), block):
        part = x[s : s + block]
        out[s : s + block] = part - (part @ basis) @ basis.T
    return out


def retrain(sae, density, x_train, x_eval, s: dict, log) -> dict:
    """Dense-subspace ablation and retraining against the matched sparse control."""
    from mechjax import sae as S
    from mechjax.sae import dense

    idx = np.flatnonzero(density > COUNT_DENSE)
    basis = dense.dense_subspace(sae, idx)
    out: dict[str, Any] = {"n_ablated_latents": int(len(idx)), "rank": int(basis.shape[1])}
    if basis.shape[1] == 0:
        log("no dense latents: nothing to ablate")
        return out
    sparse_idx, sparse_basis = dense.sparse_control(sae, density, basis.shape[1], seed=0)
    out["n_control_latents"] = int(len(sparse_idx))
    for name, q in (("dense_ablation", basis), ("sparse_ablation", sparse_basis)):
        store = S.ActivationStore(ablated(x_train, q))
        res = S.train_sae(store, _cfg(s, "topk", s["retrain_steps"]), progress=False)
        d = density_of(res.sae, ablated(x_eval, q))
        out[name] = int((d > COUNT_DENSE).sum())
        out[name + "_0.3"] = int((d > DENSE).sum())
        out[name + "_fvu"] = float(res.history[-1]["fvu"])
        log(
            f"  {name}: rank {q.shape[1]}, {out[name]} latents with density > {COUNT_DENSE} after retraining"
        )
    return out


def detectors(model, sae, density, x_eval, positions) -> dict:
    """Position, null-space, alphabetic and PC1 scores of the dense latents (> 0.1)."""
    from mechjax.sae import dense

    idx = np.flatnonzero(density > COUNT_DENSE)
    if len(idx) == 0:
        return {"latents": []}
    dirs = np.asarray(sae.W_dec, np.float64)[idx]
    f = _encode_rows(sae, x_eval)[:, idx]
    w_u = dense.unembed(model)
    tok = model.tokenizer
    strings = [tok.id_to_token(i) or "" for i in range(w_u.shape[1])]
    pos = dense.position_scores(f, positions)
    null = dense.null_space_scores(dirs, w_u)
    alpha, letters = dense.alphabetic_scores(dirs, w_u, strings)
    pc = dense.pc1_scores(dirs, x_eval[:: max(1, len(x_eval) // 20000)])
    anti = dense.antipodality(sae)
    pairs = []
    for j, i in enumerate(idx):
        p = int(anti.partner[i])
        if anti.score[i] > ANTIPODAL and p in set(idx.tolist()) and i < p:
            k = int(np.flatnonzero(idx == p)[0])
            pairs.append({"pair": [int(i), p], "antipodality": float(anti.score[i]),
                          "pc1_cos": [float(pc[j]), float(pc[k])]})  # fmt: skip
    return {
        "latents": idx.tolist(),
        "position_rho": pos.tolist(),
        "null_space": null.tolist(),
        "alphabetic_share": alpha.tolist(),
        "alphabetic_letter": letters,
        "pc1_cos": pc.tolist(),
        "antipodal_pairs": pairs,
        "n_position": int((np.abs(pos) > dense.POSITION_RHO).sum()),
        "n_null_space": int((null > dense.NULL_SPACE_ALIGNMENT).sum()),
        "n_alphabetic": int((alpha >= dense.ALPHABETIC_SHARE).sum()),
        "n_pc1": int((pc > dense.PC1_COS).sum()),
        "pc1_pair": next((p for p in pairs if min(p["pc1_cos"]) > dense.PC1_COS), None),
    }


def _store(model, rows, site: str, where: Path, progress):
    """The site's activations of `rows`, harvested to disk shards once: a rerun of the
    reproduction (after a kill, or with other SAE settings) reads them back."""
    from mechjax import sae as S

    index = where / "index.json"
    if index.exists():
        store = S.ActivationStore.open(where)
        if store.n == len(rows) * (rows.shape[1] - 1) and store.site == site:
            return store
    return S.ActivationStore.harvest(
        model, rows, site, batch_size=16, out_dir=where, progress=progress
    )


def run(out: Path, settings: dict, st, log) -> dict:
    """Every stage; returns details (also saved stage by stage through `st`)."""
    import mechjax as mj
    from mechjax import corpus
    from mechjax import sae as S

    s = settings
    model = mj.load(MODEL)
    layer = model.config.n_layers // 2
    site = mj.act_name("resid_post", layer)
    details: dict = {"site": site, "layer": layer}
    with st.stage("harvest"):
        rows = corpus.token_chunks(model, ctx_len=s["ctx_len"], n_chunks=s["n_chunks"], seed=0)
        n_eval = max(2, int(round(len(rows) * s["eval_frac"])))
        eval_rows, train_rows = rows[:n_eval], rows[n_eval:]
        store = _store(model, train_rows, site, out / "activations" / "train", st.show)
        held = _store(model, eval_rows, site, out / "activations" / "eval", False)
        x_train, x_eval = store.rows(np.arange(store.n))[0], held.rows(np.arange(held.n))[0]
        store = S.ActivationStore(x_train, site=site)  # in memory, on the device
        positions = np.tile(np.arange(1, s["ctx_len"]), len(eval_rows))
    details["tokens"] = {"train_rows": int(len(x_train)), "eval_rows": int(len(x_eval)),
                        "train_sequences": int(len(train_rows)), "eval_sequences": int(n_eval)}  # fmt: skip
    log(f"{len(x_train)} training and {len(x_eval)} held-out activations of {site}")
    saes = {}
    for arch in ("topk", "abstopk"):
        with st.stage(f"train {arch}"):
            t0 = time.perf_counter()
            res = S.train_sae(store, _cfg(s, arch, s["steps"]), meta=S.SAEMeta(model_name=MODEL, hook_name=site,
                              context_size=s["ctx_len"]), progress=st.show)  # fmt: skip
            secs = time.perf_counter() - t0
            # CE loss and KL on the first `ce_seqs` held-out chunks (three forward passes
            # of the whole model each); density on every held-out activation
            ev = S.evaluate(model, res.sae, eval_rows[: s["ce_seqs"]], batch_size=8)
            ev.pop("density")
            density = density_of(res.sae, x_eval)
            row = {**{k: float(v) for k, v in ev.items()}, **sae_summary(res.sae, density),
                   **outlier_fvu(res.sae, x_eval),
                   "train_seconds": round(secs, 1), "steps": s["steps"],
                   "train_tokens": s["steps"] * s["batch"],
                   "loss_curve": [h["fvu"] for h in res.history[:: max(1, len(res.history) // 50)]]}  # fmt: skip
            S.save(res.sae, out / "saes" / arch)
            saes[arch] = res.sae
        details[arch] = row
        st.save({arch: row})
        log(f"{arch}: FVU {ev['fvu']:.3f}, CE recovered {ev['ce_recovered']:.3f}, L0 {ev['l0']:.1f}, "
            f"{row['n_dense']} latents with density > {DENSE}, {row['n_dense_0.1']} > {COUNT_DENSE}")  # fmt: skip
    with st.stage("detectors"):
        dens = np.asarray(details["topk"]["density"])
        details["detectors"] = detectors(model, saes["topk"], dens, x_eval, positions)
    st.save({"detectors": details["detectors"]})
    with st.stage("retrain after ablation"):
        details["retrain"] = retrain(saes["topk"], dens, x_train, x_eval, s, log)
    st.save({"retrain": details["retrain"]})
    return details


def results_table(details: dict) -> dict:
    """results.json: exactly the issue's layout (plus `complete`)."""
    t, a, r = details.get("topk", {}), details.get("abstopk", {}), details.get("retrain", {})
    return {
        "topk": {
            "n_dense": t.get("n_dense"),
            "median_antipodality_dense": t.get("median_antipodality_dense"),
        },
        "abstopk": {"n_dense": a.get("n_dense")},
        "retrain": {
            "dense_ablation": r.get("dense_ablation"),
            "sparse_ablation": r.get("sparse_ablation"),
        },
    }


def reproduce(
    out_dir, *, quick: bool = False, smoke: bool = False, progress=None, log=print
) -> dict:
    from mechjax.analyses.dense_latents.report import write_report
    from mechjax.analyses.stages import Stages, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(quick, smoke)
    meta = {"settings": {**settings, "quick": quick, "smoke": smoke, "model": MODEL}}
    t0 = time.time()
    with Stages(out / "details.json", 5, progress=progress, log=log) as st:
        st.save(meta)
        details = run(out, settings, st, st.log)
        meta["seconds"] = round(time.time() - t0, 1)
        final = st.finish({**details, **meta})
    write_json(out / "results.json", {**results_table(details), "complete": True})
    write_report(out, final)
    log(
        f"wrote {out / 'report.md'}, results.json, details.json and figures in {meta['seconds']:.0f}s"
    )
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    return reproduction_parser(
        "dense-latents",
        "Reproduce 'Dense SAE latents are features, not bugs' on SmolLM2: TopK and AbsoluteTopK "
        "SAEs, density, antipodality, dense-subspace ablation and retraining, detectors.",
        quick_help="64-token chunks, 320 sequences, 1152 latents, 150 steps",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce dense-latents --out DIR [--quick]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(argv, build_parser(), reproduce)
