"""MLP neurons: weight statistics, mean-ablation effects through the final norm, token
frequency and the induction case study ("Confidence Regulation Neurons in Language
Models", Stolfo, Wu, Gurnee, Belinkov, Song, Sachan, Nanda, NeurIPS 2024).

- `weight_stats`: for every neuron of the chosen layers, from the weights alone: the
  output-weight norm, LogitVar (the variance over the vocabulary of the cosine between
  `w_out` and each unembedding column) and rho, the fraction of `w_out`'s norm in the
  unembedding's k least significant left singular directions. Entropy neurons have a large
  norm, a small LogitVar and a large rho: they write into the unembedding's near-null
  space, so they change the residual stream's norm, hence the final norm's scale and the
  temperature of every logit, without moving any logit directly. `neuron_logits`: the
  tokens a neuron boosts and suppresses.
- `ablation_effects`: many neurons of one layer mean-ablated at once, on loss and entropy
  per token. The total effect recomputes every norm; the direct effect freezes the final
  norm's scale at its clean value (and, for Gemma 3, the neuron's own post-MLP norm, the
  second normalisation on its path to the logits), so it is what the neuron's write does
  through the unembedding alone. `ln_mediated_fraction` = 1 - mean|dL_direct| /
  mean|dL_total|. For the last layer the ablated logits are a closed form of one cached
  run (a mix of two or three `[tokens, vocab]` arrays with per-token scalars), so a
  neuron costs elementwise work only; for an earlier layer the later blocks run from the
  cached residual stream, vmapped over the neurons.
- Token frequency: `unigram_direction` (centered log unigram probabilities, unit norm), and
  in `ablation_effects(unigram=...)` the ablation that holds the logits' projection on it
  at its clean value, plus KL(P_model || P_unigram) before and after.
- Induction: `induction_tokens` (BOS + random tokens repeated), `induction_head_scores`,
  `bos_ablation` (heads made to attend only to BOS on the repeated half).

Conventions follow the paper's code, which reads TransformerLens weights: the unembedding
has the final norm's gain folded in (`effective_unembed`) and is centered over the
vocabulary (which changes no probability); for LayerNorm families `w_out` is centered over
d_model (the norm removes its mean anyway). Loss and entropy are those of the next-token
prediction at positions 0..pos-2 (the last position has no target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import cache_analysis as ca
from mechjax.errors import InputError, SiteError
from mechjax.interventions import Apply
from mechjax.model import Model, run
from mechjax.patching.blocks import _block
from mechjax.typing import Array

# ------------------------------------------------------------------------------- checks


def _check_layer(model: Model, layer: int) -> int:
    n = model.config.n_layers
    layer = int(layer)
    if not -n <= layer < n:
        raise InputError(f"layer {layer} is out of range: the model has layers 0..{n - 1}")
    layer %= n
    block = model.params["blocks"][layer]
    if "mlp" not in block or "W_out" not in block["mlp"]:
        raise SiteError(
            f"layer {layer} of this {model.family.name} model has no MLP "
            f"(block parameters: {sorted(block)}); neurons are MLP neurons"
        )
    return layer


def _check_neurons(model: Model, layer: int, neurons) -> np.ndarray:
    d_mlp = model.params["blocks"][layer]["mlp"]["W_out"].shape[0]
    if neurons is None:
        return np.arange(d_mlp)
    ids = np.atleast_1d(np.asarray(neurons))
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"neurons must be a list of integer indices, got {neurons!r}")
    bad = ids[(ids < 0) | (ids >= d_mlp)]
    if bad.size:
        raise InputError(
            f"neuron {int(bad[0])} is out of range for layer {layer}: valid 0..{d_mlp - 1}"
        )
    return ids.astype(np.int64)


def _is_layer_norm(model: Model) -> bool:
    return "b" in model.params["ln_final"]


def _has_post_mlp_norm(model: Model, layer: int) -> bool:
    return "ln2_post" in model.params["blocks"][layer]


# ------------------------------------------------------------------------ weight stats


def effective_unembed(model: Model, *, center: bool = True) -> Array:
    """`W_U` [d_model, d_vocab] with the final norm's gain folded in and, by default,
    centered over the vocabulary: TransformerLens's default weights, the paper's `W_U`."""
    W = ca.final_gain(model)[:, None] * model.params["unembed"]["W_U"]
    return W - W.mean(axis=1, keepdims=True) if center else W


def _gram(W: Array, chunk: int = 16384) -> np.ndarray:
    """W W^T in float64, accumulated over vocabulary chunks (Gemma's vocab is 262k)."""
    Wn = np.asarray(W)
    g = np.zeros((Wn.shape[0], Wn.shape[0]))
    for i in range(0, Wn.shape[1], chunk):
        c = Wn[:, i : i + chunk].astype(np.float64)
        g += c @ c.T
    return g


def dark_directions(model: Model, k: int) -> Array:
    """The k least significant left singular vectors of `effective_unembed` [d_model, k]:
    the directions the unembedding (nearly) ignores. From the eigenvectors of W W^T in
    float64, which avoids an SVD of a [d_model, d_vocab] matrix."""
    d = model.config.d_model
    if not 1 <= k <= d:
        raise InputError(f"k={k} dark directions: valid 1..{d} (d_model)")
    _, vecs = np.linalg.eigh(_gram(effective_unembed(model)))  # ascending eigenvalues
    return jnp.asarray(vecs[:, :k], jnp.float32)


def default_k(model: Model) -> int:
    """The paper's size of the null space: about 1% of d_model (at least 1)."""
    return max(1, round(0.01 * model.config.d_model))


class NeuronStats(NamedTuple):
    """Per-neuron weight statistics; arrays are [len(layers), d_mlp]."""

    layers: list[int]
    norm: np.ndarray  # ||w_out||
    logit_var: np.ndarray  # Var_v cos(w_out, W_U[:, v]) (unbiased, as torch.var)
    rho: np.ndarray  # ||U_dark^T w_out|| / ||w_out||
    k: int  # number of dark directions

    def top(self, n: int = 10, by: str = "rho", layer: int | None = None) -> list[list[int]]:
        """The n neurons with the largest `by` ("rho", "norm"), as [layer, neuron] pairs,
        among `layer`'s neurons (None: the last layer of `layers`)."""
        if by not in ("rho", "norm"):
            raise InputError(f"by={by!r}; valid: 'rho', 'norm'")
        layer = self.layers[-1] if layer is None else layer
        if layer not in self.layers:
            raise InputError(f"layer {layer} has no statistics; computed: {self.layers}")
        row = getattr(self, by)[self.layers.index(layer)]
        return [[layer, int(i)] for i in np.argsort(-row, kind="stable")[:n]]


def _writes(model: Model, layer: int) -> Array:
    """Each neuron's write into the residual stream [d_mlp, d_model]: `W_out`, centered
    for LayerNorm families; for Gemma 3 the post-MLP norm's gain applied (the direction
    its output takes; its scale is per token)."""
    w = model.params["blocks"][layer]["mlp"]["W_out"]
    if _has_post_mlp_norm(model, layer):
        w = w * ca.norm_gain(model, model.params["blocks"][layer]["ln2_post"])
    if _is_layer_norm(model):
        w = w - w.mean(axis=-1, keepdims=True)
    return w


def weight_stats(model: Model, layers: Sequence[int] | None = None, *, k: int | None = None):
    """Norm, LogitVar and rho of every MLP neuron of `layers` (default: all), one pass.

    LogitVar needs no [d_mlp, d_vocab] product: with `Wn` the unembedding's unit columns,
    mean_v cos = u . mean(Wn) and mean_v cos^2 = u^T (Wn Wn^T / V) u for the unit write u.
    """
    layers = list(range(model.config.n_layers)) if layers is None else list(layers)
    layers = [_check_layer(model, l) for l in layers]
    k = default_k(model) if k is None else int(k)
    W = effective_unembed(model)
    Wn = W / jnp.linalg.norm(W, axis=0, keepdims=True)
    V = W.shape[1]
    G = jnp.asarray(_gram(Wn) / V, jnp.float32)
    m = Wn.mean(axis=1)
    dark = dark_directions(model, k)
    norms, lvars, rhos = [], [], []
    for l in layers:
        w = _writes(model, l)
        nrm = jnp.linalg.norm(w, axis=1)
        u = w / nrm[:, None]
        var = (jnp.einsum("nd,de,ne->n", u, G, u) - (u @ m) ** 2) * V / (V - 1)
        norms.append(nrm)
        lvars.append(var)
        rhos.append(jnp.linalg.norm(w @ dark, axis=1) / nrm)
    stack = lambda xs: np.asarray(jnp.stack(xs))  # noqa: E731
    return NeuronStats(layers, stack(norms), stack(lvars), stack(rhos), k)


class NeuronLogits(NamedTuple):
    boosted: list[int]  # token ids, largest w_out . W_U first
    boosted_values: np.ndarray
    suppressed: list[int]  # most negative first
    suppressed_values: np.ndarray


def neuron_logits(model: Model, layer: int, neuron: int, *, k: int = 10) -> NeuronLogits:
    """The k tokens whose logits the neuron's write raises and lowers most (w_out W_U,
    final gain folded in, vocabulary-centered)."""
    layer = _check_layer(model, layer)
    (n,) = _check_neurons(model, layer, [neuron])
    v = np.asarray(_writes(model, layer)[n] @ effective_unembed(model))
    up, down = np.argsort(-v, kind="stable")[:k], np.argsort(v, kind="stable")[:k]
    return NeuronLogits(up.tolist(), v[up], down.tolist(), v[down])


# ------------------------------------------------------------------ ablation effects


def unigram_direction(counts, *, smoothing: float = 1.0) -> tuple[Array, Array]:
    """(u, log p_uni) from unigram counts [d_vocab]: u = (log p - mean log p) / norm, the
    paper's unigram direction in logit space; add-`smoothing` counts keep log p finite."""
    c = np.asarray(counts, np.float64) + smoothing
    if c.ndim != 1 or (c <= 0).any():
        raise InputError("unigram counts must be a non-negative [d_vocab] vector")
    logp = np.log(c / c.sum())
    u = logp - logp.mean()
    return jnp.asarray(u / np.linalg.norm(u), jnp.float32), jnp.asarray(logp, jnp.float32)


class AblationEffects(NamedTuple):
    """Per-token effects of mean-ablating each neuron; arrays are [n_neurons, batch, pos-1]
    (clean ones [batch, pos-1]), for next-token predictions at positions 0..pos-2."""

    layer: int
    neurons: np.ndarray
    means: np.ndarray  # the value each neuron was set to
    loss: np.ndarray  # clean
    entropy: np.ndarray
    d_loss_total: np.ndarray
    d_loss_direct: np.ndarray
    d_entropy_total: np.ndarray
    d_entropy_direct: np.ndarray
    d_loss_unigram_frozen: np.ndarray | None = None
    d_entropy_unigram_frozen: np.ndarray | None = None
    kl_unigram: np.ndarray | None = None  # clean KL(P || P_uni) [batch, pos-1]
    kl_unigram_total: np.ndarray | None = None  # after the ablation, [n, batch, pos-1]

    def ln_mediated_fraction(self) -> np.ndarray:
        """1 - mean|dL_direct| / mean|dL_total| per neuron (the paper's LN-mediated share)."""
        return 1 - _mean_abs(self.d_loss_direct) / _mean_abs(self.d_loss_total)

    def unigram_mediated_fraction(self) -> np.ndarray:
        """1 - mean|dL with the unigram projection frozen| / mean|dL_total| per neuron."""
        if self.d_loss_unigram_frozen is None:
            raise InputError("run ablation_effects(..., unigram=(u, log_p)) for this")
        return 1 - _mean_abs(self.d_loss_unigram_frozen) / _mean_abs(self.d_loss_total)


def _mean_abs(x: np.ndarray) -> np.ndarray:
    return np.abs(x).reshape(x.shape[0], -1).mean(axis=1)


def _dist(logits):
    """(log p, p) of softmax(logits) with one exp over the vocabulary."""
    shifted = logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True))
    e = jnp.exp(shifted)
    z = e.sum(-1, keepdims=True)
    return shifted - jnp.log(z), e / z


def _loss_entropy(logits, targets):
    logp, p = _dist(logits)
    loss = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    return (loss, -(p * logp).sum(-1)), (logp, p)


def _scores(logits, targets, clean_proj, unigram):
    """(loss, entropy[, loss and entropy with the unigram projection reset, KL to it])."""
    out, (logp, p) = _loss_entropy(logits, targets)
    if unigram is None:
        return out
    u, logp_uni = unigram
    fixed = logits + (clean_proj - logits @ u)[..., None] * u
    kl = (p * (logp - logp_uni)).sum(-1)
    return out + _loss_entropy(fixed, targets)[0] + (kl,)


def _rms(sq_sum, d, eps):
    return jnp.sqrt(sq_sum / d + eps)


class _Last(NamedTuple):
    """Per-token pieces of the last layer's closed form (rows = tokens)."""

    P: Array  # [T, d] residual part the neuron does not pass through a post-norm
    Q: Array  # [T, d] MLP output before the post-MLP norm (zeros without one)
    s2: Array  # [T] clean post-MLP norm scale (ones without one)
    sf: Array  # [T] clean final scale


def _last_layer_chunk(model: Model, piece: _Last, delta, writes, targets, unigram, batch=1):
    """Effects of all neurons on one token chunk: delta [N, T], writes [N, d]."""
    cfg = model.config
    gf = ca.final_gain(model)
    W, bias = model.params["unembed"]["W_U"], ca._logit_bias(model)
    post = _has_post_mlp_norm(model, model.config.n_layers - 1)
    g2 = ca.norm_gain(model, model.params["blocks"][-1]["ln2_post"]) if post else jnp.ones_like(gf)
    cen = (lambda x: x - x.mean(-1, keepdims=True)) if _is_layer_norm(model) else (lambda x: x)
    d = cfg.d_model
    A = cen(piece.P) * gf @ W  # [T, V]
    B = cen(piece.Q * g2) * gf @ W if post else jnp.zeros((), A.dtype)
    clean = (A + B / piece.s2[:, None]) / piece.sf[:, None] + bias
    clean_proj = None if unigram is None else clean @ unigram[0]
    base = _scores(clean, targets, clean_proj, unigram)

    def one(dl, w):
        g = cen(w * g2) * gf @ W  # [V]
        if post:
            s2 = _rms(((piece.Q + dl[:, None] * w) ** 2).sum(-1), d, cfg.eps)
            v = cen(w * g2)
            q = cen(piece.Q * g2)
            pc = cen(piece.P)
            sq = (
                (pc**2).sum(-1)
                + 2 * ((pc * q).sum(-1) + dl * (pc * v).sum(-1)) / s2
                + ((q**2).sum(-1) + 2 * dl * (q * v).sum(-1) + dl**2 * (v**2).sum(-1)) / s2**2
            )
            sf = _rms(sq, d, cfg.eps)
            total = (A + (B + dl[:, None] * g) / s2[:, None]) / sf[:, None] + bias
            direct = (A + (B + dl[:, None] * g) / piece.s2[:, None]) / piece.sf[:, None] + bias
        else:
            pc, v = cen(piece.P), cen(w)
            sq = (pc**2).sum(-1) + 2 * dl * (pc * v).sum(-1) + dl**2 * (v**2).sum(-1)
            sf = _rms(sq, d, cfg.eps)
            total = (A + dl[:, None] * g) / sf[:, None] + bias
            direct = (A + dl[:, None] * g) / piece.sf[:, None] + bias
        return _scores(total, targets, clean_proj, unigram), _scores(direct, targets, None, None)

    total, direct = jax.lax.map(lambda a: one(*a), (delta, writes), batch_size=batch)
    return base, total, direct


_last_layer_jit = jax.jit(_last_layer_chunk, static_argnames=("batch",))


def _fit_stats(model: Model, layer: int, tokens: Array) -> dict:
    """Clean run: activations of the layer's neurons and the pieces the closed form needs,
    harvested batch by batch (the logits, [batch, pos, d_vocab], are never kept)."""
    from mechjax import harvest

    b = f"blocks.{layer}"
    capture = [f"{b}.mlp.hook_post", f"{b}.hook_resid_post", "ln_final.hook_scale"]
    if _has_post_mlp_norm(model, layer):
        capture += [f"{b}.hook_resid_mid", f"{b}.ln2_post.hook_scale"]
        capture += [f"{b}.ln2_post.hook_normalized"]
    acts = harvest.harvest(model, tokens, capture, batch_size=8, progress=False)
    return {k: jnp.asarray(v) for k, v in acts.items()}


def ablation_effects(
    model: Model,
    tokens,
    layer: int,
    neurons: Sequence[int] | None = None,
    *,
    means=None,
    unigram: tuple[Array, Array] | None = None,
    token_chunk: int = 128,
    neuron_batch: int = 1,
) -> AblationEffects:
    """Mean-ablate each of `neurons` of `layer` on `tokens` [batch, pos] (unpadded).

    Args:
      means: the value each neuron is set to ([n_neurons]); default its mean activation
        over `tokens` (the paper's reference distribution is the same text).
      unigram: `unigram_direction(counts)`: also the ablation with the logits' projection
        on u held at its clean value, and KL to the unigram distribution.
      token_chunk: tokens per compiled step of the last-layer closed form (memory is about
        3 * token_chunk * d_vocab floats per neuron in flight).
      neuron_batch: neurons computed together (`vmap`) inside the scan over neurons;
        1 keeps memory lowest, more trades memory for fewer sequential steps.
    """
    layer = _check_layer(model, layer)
    ids = _check_neurons(model, layer, neurons)
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise InputError(f"tokens must be [batch, pos] with pos >= 2, got {tuple(tokens.shape)}")
    b = f"blocks.{layer}"
    cache = _fit_stats(model, layer, tokens)
    act = cache[f"{b}.mlp.hook_post"][..., ids]  # [B, P, N]
    if means is None:
        mean = act.mean(axis=(0, 1))
    else:
        mean = jnp.asarray(means, act.dtype)
        if mean.shape != (len(ids),):
            raise InputError(f"means has shape {tuple(mean.shape)}; expected ({len(ids)},)")
    delta = (mean - act)[:, :-1]  # [B, P-1, N]: positions with a next token
    targets = tokens[:, 1:]
    W_out = model.params["blocks"][layer]["mlp"]["W_out"][ids]  # [N, d]
    if layer == model.config.n_layers - 1:
        res = _last_layer(
            model, cache, b, delta, W_out, targets, unigram, token_chunk, neuron_batch
        )
    else:
        res = _later_blocks(
            model, cache, tokens, layer, delta, W_out, targets, unigram, neuron_batch
        )
    (base, total, direct) = res
    shape = targets.shape
    n = len(ids)
    fn = lambda x, lead=(): np.asarray(x).reshape(lead + shape)  # noqa: E731
    loss, ent = fn(base[0]), fn(base[1])
    kw = {}
    if unigram is not None:
        kw = dict(
            d_loss_unigram_frozen=fn(total[2], (n,)) - loss,
            d_entropy_unigram_frozen=fn(total[3], (n,)) - ent,
            kl_unigram=fn(base[4]),
            kl_unigram_total=fn(total[4], (n,)),
        )
    return AblationEffects(
        layer,
        ids,
        np.asarray(mean),
        loss,
        ent,
        fn(total[0], (n,)) - loss,
        fn(direct[0], (n,)) - loss,
        fn(total[1], (n,)) - ent,
        fn(direct[1], (n,)) - ent,
        **kw,
    )


def _last_layer(model, cache, b, delta, W_out, targets, unigram, token_chunk, batch):
    """The closed form over token chunks of one shape (one compile), outputs on host."""
    flat = lambda x: x[:, :-1].reshape(-1, x.shape[-1])  # noqa: E731  [T, last axis]
    if _has_post_mlp_norm(model, model.config.n_layers - 1):
        s2 = cache[f"{b}.ln2_post.hook_scale"]
        Q = cache[f"{b}.ln2_post.hook_normalized"] * s2
        P = cache[f"{b}.hook_resid_mid"]
    else:
        P = cache[f"{b}.hook_resid_post"]
        Q, s2 = jnp.zeros_like(P), jnp.ones(P.shape[:-1] + (1,), P.dtype)
    sf = cache["ln_final.hook_scale"]
    P, Q, s2, sf = flat(P), flat(Q), flat(s2)[:, 0], flat(sf)[:, 0]
    dl = delta.reshape(-1, delta.shape[-1]).T  # [N, T]
    tg = targets.reshape(-1)
    T = tg.shape[0]
    c = min(token_chunk, T)
    pad = -T % c
    padded = lambda x, v=0.0: jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], v, x.dtype)])  # noqa: E731
    P, Q, s2, sf, tg = padded(P), padded(Q), padded(s2, 1.0), padded(sf, 1.0), padded(tg, 0)
    dl = jnp.concatenate([dl, jnp.zeros((dl.shape[0], pad), dl.dtype)], axis=1)
    parts = []
    for i in range(0, T + pad, c):
        sl = slice(i, i + c)
        piece = _Last(P[sl], Q[sl], s2[sl], sf[sl])
        parts.append(
            jax.device_get(
                _last_layer_jit(model, piece, dl[:, sl], W_out, tg[sl], unigram, batch=batch)
            )
        )
    cat = lambda xs, axis: np.concatenate(xs, axis=axis)[..., :T]  # noqa: E731
    base = tuple(cat([p[0][j] for p in parts], 0) for j in range(len(parts[0][0])))
    total = tuple(cat([p[1][j] for p in parts], 1) for j in range(len(parts[0][1])))
    direct = tuple(cat([p[2][j] for p in parts], 1) for j in range(2))
    return base, total, direct


def _later_blocks(model, cache, tokens, layer, delta, W_out, targets, unigram, batch):
    """An earlier layer: the ablated write added to resid_post, later blocks run from it
    (vmapped over neurons), then the final norm recomputed (total) or frozen (direct)."""
    if _has_post_mlp_norm(model, layer):
        raise InputError(
            f"ablation_effects on layer {layer} of {model.family.name}: the post-MLP norm's "
            "closed form is implemented for the last layer only; use the last layer"
        )
    b = f"blocks.{layer}"
    resid = cache[f"{b}.hook_resid_post"]
    sf = cache["ln_final.hook_scale"][:, :-1, 0]
    return jax.device_get(
        _later_jit(model, layer, resid, tokens, delta, W_out, targets, sf, unigram, batch)
    )


def _later_fn(model, layer, resid, tokens, delta, W_out, targets, sf, unigram, batch):
    W, bias = model.params["unembed"]["W_U"], ca._logit_bias(model)
    n = model.config.n_layers

    def final(r):
        for l in range(layer + 1, n):
            r, _ = _block(model, model.params["blocks"][l], r, tokens, None, layer=l)
        return r[:, :-1]

    clean_final = final(resid)
    clean = ca.apply_final_norm(clean_final, model) @ W + bias
    clean_proj = None if unigram is None else clean @ unigram[0]
    base = _scores(clean, targets, clean_proj, unigram)

    def one(dl, w):  # dl [B, P-1]
        dl = jnp.concatenate([dl, jnp.zeros_like(dl[:, :1])], axis=1)
        r = final(resid + dl[..., None] * w)
        total = ca.apply_final_norm(r, model) @ W + bias
        direct = ca.apply_final_norm(r, model, sf[..., None]) @ W + bias
        return _scores(total, targets, clean_proj, unigram), _scores(direct, targets, None, None)

    total, direct = jax.lax.map(
        lambda a: one(*a), (jnp.moveaxis(delta, -1, 0), W_out), batch_size=batch
    )
    return base, total, direct


_later_jit = jax.jit(_later_fn, static_argnums=(1, 9))


# ---------------------------------------------------------------------------- induction


def induction_tokens(
    model: Model, n: int = 100, length: int = 100, *, seed: int = 0, bos: int | None = None
) -> np.ndarray:
    """[n, 1 + 2 * length] int32: BOS + R + R, R uniform random tokens (as the paper's
    `generate_induction_examples`). `bos` defaults to the tokenizer's BOS, else token 0 is
    not used as a prefix. Special tokens below the tokenizer's first ordinary id stay in."""
    rng = np.random.RandomState(seed)
    if bos is None and model.tokenizer is not None:
        bos = getattr(model.tokenizer, "bos_token_id", None)
    r = rng.randint(0, model.config.d_vocab, (n, length))
    head = np.full((n, 0 if bos is None else 1), 0 if bos is None else bos)
    return np.concatenate([head, r, r], axis=1).astype(np.int32)


def _diag_scores(model: Model, tokens: Array, length: int) -> Array:
    names = tuple(f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layers))
    cache = run(model, tokens, capture=names).cache
    diag = [
        jnp.diagonal(cache[n], offset=-(length - 1), axis1=2, axis2=3)[..., -length:] for n in names
    ]  # each [batch, heads, length]: the repeated half's queries only
    return jnp.stack([d.mean(-1) for d in diag], axis=1)  # [batch, layers, heads]


_diag_scores_jit = jax.jit(_diag_scores, static_argnums=(2,))


def induction_head_scores(model: Model, tokens, length: int, *, batch_size: int = 8):
    """[n_layers, n_heads]: mean attention from each repeated-half token to the token after
    its first occurrence (the diagonal at offset length - 1), on `induction_tokens`.
    Batched (one compiled program), so no [batch, pos, d_vocab] logits pile up."""
    toks = np.asarray(tokens, np.int32)
    n = toks.shape[0]
    size = min(batch_size, n)
    rows = []
    for i in range(0, n, size):
        chunk = toks[i : i + size]
        real = chunk.shape[0]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], size - real, 0)])  # one shape
        rows.append(np.asarray(_diag_scores_jit(model, jnp.asarray(padded), length))[:real])
    return np.concatenate(rows).mean(0)


def _bos_pattern(params, x):
    heads, start = params
    onehot = jnp.zeros_like(x).at[..., 0].set(1.0)
    q = jnp.arange(x.shape[2])[None, None, :, None] >= start
    h = jnp.isin(jnp.arange(x.shape[1]), heads)[None, :, None, None]
    return jnp.where(q & h, onehot, x)


def bos_ablation(heads: Sequence[Sequence[int]], start: int) -> dict:
    """Hooks making each (layer, head) attend only to position 0 (BOS) from query
    positions >= `start` (the paper's `bos_ablate_attn_heads`), for `mj.run`."""
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(int(l), []).append(int(h))
    return {
        f"blocks.{l}.attn.hook_pattern": Apply((jnp.asarray(hs), jnp.asarray(start)), _bos_pattern)
        for l, hs in by_layer.items()
    }
