"""What the fluid-representations study measures on tokenised traces: the query scores
and the activations at every action and predicate word (one harvest), per-concept
representations over the context, their in-naming and cross-naming similarities, and the
accuracy under interventions that overwrite the action words' residual stream.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.analyses.fluid_representations.sequences import Trace
from mechjax.tasks import blocksworld as B

PARTNER = {0: 3, 3: 0, 1: 2, 2: 1}  # same hand before: pick-up/unstack, put-down/stack
WRONG = {0: 3, 3: 0, 1: 2, 2: 1}  # the concept a "wrong" vector is taken from (same pairs)
BUCKET = 64


def _pad_tokens(traces: Sequence[Trace], length: int | None = None) -> np.ndarray:
    width = length or max(len(t.tokens) for t in traces)
    width = -(-width // BUCKET) * BUCKET
    out = np.zeros((len(traces), width), np.int32)
    for i, t in enumerate(traces):
        n = min(len(t.tokens), width)
        out[i, :n] = t.tokens[:n]
    return out


def scores_from_normalized(model, normalized: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """Logits of the candidate tokens from `ln_final.hook_normalized` [..., d_model]: the
    final norm's gain and the unembedding columns (no full-vocabulary matmul)."""
    from mechjax import cache_analysis

    if getattr(model.config, "final_softcap", None):
        raise ValueError("final logit softcapping is not handled here")
    gain = np.asarray(cache_analysis.final_gain(model))
    w = np.asarray(model.params["unembed"]["W_U"])[:, cands]
    out = (normalized * gain) @ w
    b = model.params["unembed"].get("b_U")
    return out + (np.asarray(b)[cands] if b is not None else 0.0)


def harvest_traces(model, traces: Sequence[Trace], layers: Sequence[int], cands, batch: int = 4):
    """One pass over the traces: per trace, the query scores [steps, 4], the residual
    stream after each of `layers` at the verbs [layers, steps, d] and at the predicates
    [layers, n_pred, d]."""
    from mechjax import harvest as hv

    pos = [np.concatenate([t.verb, t.pred_pos, t.query]) for t in traces]
    k = max(len(p) for p in pos)
    idx = np.stack([np.pad(p, (0, k - len(p))) for p in pos])
    sites = [f"blocks.{l}.hook_resid_post" for l in layers] + ["ln_final.hook_normalized"]
    got = hv.harvest(model, _pad_tokens(traces), sites, positions=idx, batch_size=batch,
                     progress=False)  # fmt: skip
    out = []
    for i, t in enumerate(traces):
        nv, npd, nq = len(t.verb), len(t.pred_pos), len(t.query)
        resid = np.stack([got[s][i] for s in sites[:-1]])  # [layers, k, d]
        norm = got[sites[-1]][i, nv + npd : nv + npd + nq]
        out.append(
            {
                "scores": scores_from_normalized(model, norm, cands),
                "verb": resid[:, :nv],
                "pred": resid[:, nv : nv + npd],
            }
        )
    return out


def accuracy(scores: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: four-way correct (argmax over the verbs) and two-way correct (the answer
    against the other verb that the hand allows, so the hand alone does not decide)."""
    four = scores.argmax(-1) == answers
    return four, margin(scores, answers) > 0


def margin(scores: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Per query: the answer's logit minus that of the other verb the hand allows (a
    graded two-way score; > 0 is two-way correct)."""
    partner = np.vectorize(PARTNER.get)(answers)
    right = np.take_along_axis(scores, answers[..., None], -1)[..., 0]
    return right - np.take_along_axis(scores, partner[..., None], -1)[..., 0]


def step_bins(steps: int, n_bins: int) -> np.ndarray:
    """The bin of each step (and state) index 0..steps: equal spans of the context."""
    return np.minimum(np.arange(steps + 1) * n_bins // (steps + 1), n_bins - 1)


def representations(runs, traces, n_bins: int, steps: int) -> dict[str, np.ndarray]:
    """Mean residual stream per concept and context bin, for the verbs (action concepts)
    and the predicates: {"verb": [layers, 4, bins, d], "pred": [layers, 5, bins, d]},
    NaN where a concept has no occurrence in a bin."""
    bins = step_bins(steps, n_bins)
    out = {}
    for kind, n_concepts in (("verb", len(B.ACTIONS)), ("pred", len(B.PREDICATES))):
        n_layers, d = runs[0][kind].shape[0], runs[0][kind].shape[-1]
        total = np.zeros((n_layers, n_concepts, n_bins, d))
        count = np.zeros((n_concepts, n_bins))
        for r, t in zip(runs, traces):
            concept = t.answer if kind == "verb" else t.pred_concept
            step = np.arange(len(t.answer)) if kind == "verb" else t.pred_step
            for j, (c, s) in enumerate(zip(concept, step)):
                total[:, c, bins[s]] += r[kind][:, j]
                count[c, bins[s]] += 1
        with np.errstate(invalid="ignore"):
            out[kind] = total / count[None, :, :, None]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def centered(rep: np.ndarray) -> np.ndarray:
    """Subtract, per layer and bin, the mean over concepts (what every concept shares at
    that point of the context: position, format), then normalise."""
    return _unit(rep - np.nanmean(rep, axis=1, keepdims=True))


def in_naming(rep: np.ndarray) -> np.ndarray:
    """[layers, bins - 1]: mean over concepts of the cosine between a concept's centred
    vector in consecutive bins (does it settle as the context grows?)."""
    c = centered(rep)
    return np.nanmean(np.sum(c[:, :, 1:] * c[:, :, :-1], -1), axis=1)


def cross_naming(rep_a: np.ndarray, rep_b: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer and bin, the cosine of centred vectors of the same concept under two
    namings, of different concepts, and their gap ([layers, bins] each)."""
    a, b = centered(rep_a), centered(rep_b)
    sims = np.einsum("lcbd,lkbd->lbck", a, b)  # [layers, bins, concept_a, concept_b]
    n = sims.shape[-1]
    eye = np.eye(n, dtype=bool)
    same = np.nanmean(sims[..., eye], -1)
    diff = np.nanmean(sims[..., ~eye], -1)
    return {"same": same, "different": diff, "gap": same - diff}


def _put(params, x):
    """Overwrite rows: x[b, idx[b, j]] = vecs[b, j] where valid[b, j]."""
    idx, vecs, valid = params
    rows = jnp.arange(x.shape[0])[:, None]
    keep = x[rows, idx]
    return x.at[rows, idx].set(jnp.where(valid[..., None], vecs.astype(x.dtype), keep))


@functools.partial(jax.jit, static_argnames=("site",))
def _patched_normalized(model, tokens, idx, vecs, valid, qpos, *, site: str):
    import mechjax as mj

    hooks = {site: mj.apply_fn(_put, (idx, vecs, valid))}
    cache = mj.run(model, tokens, hooks, capture=("ln_final.hook_normalized",)).cache
    x = cache["ln_final.hook_normalized"]
    return jnp.take_along_axis(x, qpos[..., None], axis=1)


def patched_scores(
    model, traces: Sequence[Trace], steps: int, layer: int, vectors, cands, batch: int = 4
) -> np.ndarray:
    """Query scores [n, steps, 4] of the traces cut after `steps` actions, with the
    residual stream after `layer` overwritten at the verb of every one of those steps by
    `vectors[i]` ([steps, d] per trace; None: no intervention)."""
    width = max(int(t.ends[steps - 1]) for t in traces)
    toks = _pad_tokens(
        [t._replace(tokens=t.tokens[: int(t.ends[steps - 1])]) for t in traces], width
    )
    d = model.config.d_model
    idx = np.stack([t.verb[:steps] for t in traces]).astype(np.int32)
    qpos = np.stack([t.query[:steps] for t in traces]).astype(np.int32)
    vecs = np.zeros((len(traces), steps, d), np.float32)
    valid = np.zeros((len(traces), steps), bool)
    for i, v in enumerate(vectors):
        if v is not None:
            vecs[i], valid[i] = v, True
    out = []
    site = f"blocks.{layer}.hook_resid_post"
    for s in range(0, len(traces), batch):
        sl = slice(s, s + batch)
        pad = batch - len(toks[sl])
        args = [np.concatenate([a[sl], np.repeat(a[sl][-1:], pad, 0)]) if pad else a[sl]
                for a in (toks, idx, vecs, valid, qpos)]  # fmt: skip
        norm = np.asarray(_patched_normalized(model, *map(jnp.asarray, args), site=site))
        out.append(norm[: batch - pad])
    return scores_from_normalized(model, np.concatenate(out), cands)


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """Mean of a - b over paired units (traces) with a bootstrap 95% interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return {"mean": float(d.mean()), "ci": [float(np.quantile(boots, q)) for q in (0.025, 0.975)]}
