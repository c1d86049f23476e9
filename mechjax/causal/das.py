"""Training featurizers on counterfactual data (DAS and its relatives) and measuring IIA.

The loss of a pair is the cross-entropy of the intervened model's next-token prediction
at the base prompt's last real token against the causal model's counterfactual label
(`CounterfactualData.labels`); learned masks (boundless DAS, differential binary
masking) add `sparsity * mean(mask)`, with the mask's temperature annealed linearly from
`temperature[0]` to `temperature[1]` over training, as pyvene's boundless DAS does.
IIA (interchange intervention accuracy) is the fraction of held-out pairs whose
intervened argmax equals the label, with hard masks.

Where the work goes. At a residual-stream site (`site="resid_pre"`, the input of layer
L) the activations below L are computed once per dataset (`site_acts`), not once per
step: a training step runs layers L..n-1 only, from the cached, intervened residual
stream, and unembeds only the last real token. For families whose layers all run the same
code (Llama/SmolLM2, NeoX, GPT-2 without layer-index scaling) the layer is a traced value
(a `lax.cond` per block skips layers below it), so `search` trains every layer as one
compiled program (`lax.map` over layers). Gemma 3 interleaves sliding-window and global
layers; there each layer compiles its own program (`search` loops in Python). Any other
site trains through `mj.run` with an `Interchange` hook (the prefix is recomputed each
step). Training is a `lax.scan` over steps: one host call per layer, or per search.

Prompts are right-padded and attention is causal, so the padding after a row's last real
token never reaches the positions read; no attention mask is needed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from mechjax import sites as sites_mod
from mechjax.causal import featurizers as F
from mechjax.causal.data import CounterfactualData
from mechjax.causal.interchange import Interchange, gather, scatter
from mechjax.errors import InputError
from mechjax.hooks import HookContext
from mechjax.interventions import Intervention
from mechjax.model import Model, run
from mechjax.patching.blocks import _block, _layer_invariant, _stack_blocks, _unembed

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (optax Adam). `temperature`, `sparsity` and `mask_lr` act
    only on featurizers with a learned mask.

    `mask_lr` is the mask logits' own learning rate (the rotation keeps `lr`), as
    boundless DAS trains its boundaries ten times faster than its rotation: Adam moves a
    logit by about its learning rate per step, and the hard mask of evaluation is
    `logits > 0`, so at a rotation's rate (1e-3 to 3e-3) a logit cannot change sign in a
    few hundred steps and the learned mask stays as initialised.
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    temperature: tuple[float, float] = (50.0, 0.1)
    sparsity: float = 0.01
    seed: int = 0
    mask_lr: float = 5e-2


class SiteActs(NamedTuple):
    """What a dataset's runs leave for training at `resid_pre` of `layers`.

    `source`: the source vectors `[n_layers, n, k, d]`. Then either (mode "decode", every
    intervention at the base's last real token) `cache`, the KV cache of every base prompt
    but its last token, and `last_tok [n, 1]`; or (mode "suffix") `base`, the bases'
    residual streams `[n_layers, n, pos, d]`.
    """

    layers: tuple[int, ...]
    base: Array | None
    source: Array
    cache: Any = None
    last_tok: Array | None = None

    @property
    def mode(self) -> str:
        return "decode" if self.cache is not None else "suffix"


class Trained(NamedTuple):
    featurizer: F.Featurizer
    losses: Array  # [steps]


# --------------------------------------------------------------------- checks, caching


def _check_data(model: Model, data: CounterfactualData) -> None:
    if not isinstance(data, CounterfactualData):
        raise InputError(f"expected CounterfactualData, got {type(data).__name__}")
    v = model.config.d_vocab
    for name in ("base", "source", "labels"):
        x = getattr(data, name)
        if x.size and (x.min() < 0 or x.max() >= v):
            raise InputError(f"CounterfactualData.{name} has token ids outside [0, {v})")


def _check_layers(model: Model, layers) -> tuple[int, ...]:
    n = model.config.n_layers
    layers = tuple(int(l) for l in np.atleast_1d(layers))
    bad = [l for l in layers if not 0 <= l < n]
    if bad or not layers:
        raise InputError(f"layers {bad or '()'} are not in [0, {n}) (the model has {n} layers)")
    return layers


def _check_feat(model: Model, feat: F.Featurizer, site: str) -> None:
    d = model.config.d_model
    if site == "resid_pre" and feat.width != d:
        raise InputError(
            f"the featurizer reads width {feat.width}, but resid_pre has width d_model = {d}"
        )


def at_last_token(data: CounterfactualData) -> bool:
    """True if every row intervenes at one position, its last real token."""
    pos = data.base_positions
    return pos.shape[1] == 1 and bool((pos[:, 0] == data.base_lengths - 1).all())


def site_acts(
    model: Model,
    data: CounterfactualData,
    layers,
    batch_size: int = 32,
    mode: str | None = None,
) -> SiteActs:
    """Run bases and sources once and keep what training at `resid_pre` of `layers` needs.

    Sources: `resid_pre` of each layer at their `source_positions`. Bases, mode "decode"
    (the default when every row intervenes at its last real token): the KV cache of the
    prompt without that token, so a step runs one token per row through the network;
    mode "suffix": `resid_pre` of each layer at every position, so a step reruns layers
    L..n-1 over the whole prompt.
    """
    _check_data(model, data)
    layers = _check_layers(model, layers)
    if mode is None:
        mode = "decode" if at_last_token(data) and _can_decode(model) else "suffix"
    if mode not in ("decode", "suffix"):
        raise InputError(f"mode {mode!r}; valid: 'decode', 'suffix'")
    if mode == "decode" and not at_last_token(data):
        raise InputError(
            "mode 'decode' needs every intervention at the base's last real token "
            "(base_positions [n, 1] == base_lengths - 1); use mode 'suffix'"
        )
    names = tuple(sites_mod.act_name("resid_pre", l) for l in layers)

    def harvest(tokens, pos=None):
        # harvest's program returns only the sites, so XLA drops every layer above the
        # deepest one and the unembedding
        from mechjax import harvest as H

        one = pos is not None and pos.shape[1] == 1
        got = H.harvest(
            model,
            tokens,
            names,
            batch_size=batch_size,
            progress=False,
            positions=pos[:, 0] if one and pos is not None else None,
        )
        x = np.stack([got[n] for n in names])
        if one:
            return jnp.asarray(x[:, :, None, :])
        if pos is not None:
            x = np.take_along_axis(x, pos[None, :, :, None], axis=2)
        return jnp.asarray(x)

    source = harvest(data.source, data.source_positions)
    if mode == "decode":
        cache, last_tok = prefix_cache(model, data, batch_size)
        return SiteActs(layers, None, source, cache, last_tok)
    return SiteActs(layers, harvest(data.base), source)


def _can_decode(model: Model) -> bool:
    from mechjax.generation import decode_fn

    try:
        decode_fn(model)
    except InputError:
        return False
    return True


def prefix_cache(model: Model, data: CounterfactualData, batch_size: int = 32):
    """(KV cache of every base prompt without its last real token, left-padded to one
    width; those last tokens `[n, 1]`)."""
    from mechjax import kv_cache
    from mechjax.generation import decode_fn

    lengths = data.base_lengths
    width = max(int(lengths.max()) - 1, 1)
    prefix = np.zeros((len(data), width), np.int32)
    mask = np.zeros((len(data), width), bool)
    for r, n in enumerate(lengths):
        if n > 1:
            prefix[r, width - (n - 1) :] = data.base[r, : n - 1]
            mask[r, width - (n - 1) :] = True
    last = data.base[np.arange(len(data)), lengths - 1][:, None]
    decode = jax.jit(decode_fn(model), static_argnums=2, static_argnames="last_only")
    parts = []
    for s in range(0, len(data), batch_size):
        toks, m = prefix[s : s + batch_size], mask[s : s + batch_size]
        empty = kv_cache.init(model.config, len(toks), width + 1)
        out = decode(
            model.params,
            jnp.asarray(toks),
            model.config,
            empty,
            attention_mask=jnp.asarray(m),
            last_only=True,
        )
        parts.append(out.cache)
    cache = jax.tree.map(lambda *x: jnp.concatenate(x) if x[0].ndim else x[0], *parts)
    return cache, jnp.asarray(last)


# ------------------------------------------------------------------- intervened forward


class _Static(NamedTuple):
    """What a compiled program is specialised on (hashable): the model's family and
    config, the optimisation, the site (None: resid_pre from cached activations), the
    mode ("decode", "suffix", "hooked"), whether the layer is a traced value (`layered`;
    in mode "decode" a gated hook at each of `hook_layers`) or the static `layer`."""

    family: Any
    config: Any
    tcfg: TrainConfig
    site: str | None
    layered: bool
    layer: int | None
    mask_on: bool
    mode: str = "suffix"
    hook_layers: tuple = ()


class _Arrays(NamedTuple):
    """A dataset on device: cached base residuals (None on the hook path), source vectors,
    base positions, base tokens, last real token, labels."""

    base: Array | None
    src: Array
    pos: Array
    tokens: Array
    last: Array
    labels: Array
    cache: Any = None
    last_tok: Array | None = None


@struct.dataclass
class _Gate(Intervention):
    """`iv` where `on` (a traced bool) is True, the identity elsewhere: one hook per
    candidate layer makes the intervened layer a value."""

    iv: Interchange
    on: Array

    def apply(self, x, site):
        return jnp.where(self.on, self.iv.apply(x, site), x)


def _suffix_logits(model: Model, stacked, layer, resid, tokens, last) -> Array:
    """Logits at `last [b]` of the model run from `resid` = resid_pre of `layer`."""
    n = model.config.n_layers
    if stacked is not None:  # one traced body, the layer a value

        def body(r, xs):
            l, p = xs
            r = jax.lax.cond(
                l >= layer, lambda r: _block(model, p, r, tokens, None)[0], lambda r: r, r
            )
            return r, None

        resid, _ = jax.lax.scan(body, resid, (jnp.arange(n), stacked))
    else:
        for l in range(int(layer), n):
            resid = _block(model, model.params["blocks"][l], resid, tokens, None, layer=l)[0]
    final = gather(resid, last[:, None])
    tok = jnp.take_along_axis(tokens, last[:, None], axis=1)
    return _unembed(model, final, tok, None)[:, 0]


def _logits(st: _Static, params, feat, layer, a: _Arrays, idx, temp) -> Array:
    """The intervened next-token logits of rows `idx`."""
    model = Model(params, st.config, st.family)
    pos, tokens, last = a.pos[idx], a.tokens[idx], a.last[idx]
    if st.mode == "decode":
        from mechjax.generation import decode_fn

        sub = jax.tree.map(lambda x: x[idx] if x.ndim else x, a.cache)
        iv = Interchange(feat, a.src[idx], jnp.zeros((idx.shape[0], 1), jnp.int32), None, temp)
        name = lambda l: sites_mod.act_name("resid_pre", l)  # noqa: E731
        if st.layered:
            ivs = {name(l): (_Gate(iv, layer == l),) for l in st.hook_layers}
        else:
            ivs = {name(st.layer): (iv,)}
        assert a.last_tok is not None
        out = decode_fn(model)(
            params, a.last_tok[idx], st.config, sub, hook=HookContext(ivs), last_only=True
        )
        return out.logits[:, 0]
    if st.site is not None:
        iv = Interchange(feat, a.src[idx], pos, None, temp)
        logits = run(model, tokens, {st.site: iv}).logits
        return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
    assert a.base is not None
    base = a.base[idx]
    new = F.interchange(feat, gather(base, pos), a.src[idx], temp)
    stacked = _stack_blocks(model) if st.layered else None
    layer = layer if st.layered else st.layer
    return _suffix_logits(model, stacked, layer, scatter(base, pos, new), tokens, last)


def _fit(st: _Static, params, feat, key, layer, a: _Arrays):
    """Adam on the featurizer's trainable leaves, `tcfg.steps` steps as one `lax.scan`."""
    cfg = st.tcfg
    keep = _trainable(feat)
    opt = optax.scale_by_adam()
    t0, t1 = cfg.temperature
    n = a.labels.shape[0]

    def loss(feat, idx, temp):
        logits = _logits(st, params, feat, layer, a, idx, temp if st.mask_on else None)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, a.labels[idx]).mean()
        return ce + cfg.sparsity * feat.mask(temp).mean() if st.mask_on else ce

    def step(carry, i):
        feat, state, key = carry
        key, sub = jax.random.split(key)
        idx = jax.random.choice(sub, n, (min(cfg.batch_size, n),), replace=False)
        temp = t0 + (t1 - t0) * i / max(cfg.steps - 1, 1)
        value, grads = jax.value_and_grad(loss)(feat, idx, temp)
        updates, state = opt.update(_frozen_to_zero(grads, keep), state, feat)
        updates = _scaled(updates, cfg)
        return (optax.apply_updates(feat, updates), state, key), value

    (feat, _, _), losses = jax.lax.scan(step, (feat, opt.init(feat), key), jnp.arange(cfg.steps))
    return feat, losses


def _predict(st: _Static, params, feat, layer, a: _Arrays) -> Array:
    """Argmax of the intervened logits (hard masks) of every row, in chunks of 16."""
    n = a.labels.shape[0]
    rows = _chunks(n)
    pred = jax.lax.map(
        lambda idx: jnp.argmax(_logits(st, params, feat, layer, a, idx, None), -1), rows
    )
    return pred.reshape(-1)[:n]


_fit_jit = jax.jit(_fit, static_argnums=0)
_predict_jit = jax.jit(_predict, static_argnums=0)


def _fit_and_score(st, params, feat, key, layer, a: _Arrays, t: _Arrays, trainable: bool):
    losses = jnp.zeros((0,))
    if trainable:
        feat, losses = _fit(st, params, feat, key, layer, a)
    pred = _predict(st, params, feat, layer, t)
    return feat, losses, (pred == t.labels).mean()


def _search_layered(st, params, inits, keys, layers, a: _Arrays, t: _Arrays, trainable: bool):
    """Every layer in one program: `lax.map` over (layer, its cached residuals, init)."""

    def one(xs):
        layer, base, src, tbase, tsrc, key, feat = xs
        a1, t1 = a._replace(base=base, src=src), t._replace(base=tbase, src=tsrc)
        return _fit_and_score(st, params, feat, key, layer, a1, t1, trainable)

    return jax.lax.map(one, (layers, a.base, a.src, t.base, t.src, keys, inits))


_search_jit = jax.jit(_search_layered, static_argnums=(0, 7))
_one_jit = jax.jit(_fit_and_score, static_argnums=(0, 7))


# ----------------------------------------------------------------------------- training


def _trainable(feat: F.Featurizer) -> set:
    """Which leaves optax updates: the rotation and the mask logits, nothing else."""
    names = set()
    if isinstance(feat, F.Rotation):
        names.add("basis")
    if feat.learned_mask:
        names.add("logits")
    if not names:
        raise InputError(
            f"a {type(feat).__name__} featurizer has nothing to train; measure it with iia()"
        )
    return names


def _scaled(updates, cfg: TrainConfig):
    """Adam's direction times the learning rate: `cfg.mask_lr` on the mask logits,
    `cfg.lr` elsewhere."""

    def scale(path, u):
        top = getattr(path[0], "name", None) if path else None
        return -(cfg.mask_lr if top == "logits" else cfg.lr) * u

    return jax.tree_util.tree_map_with_path(scale, updates)


def _frozen_to_zero(grads, names: set):
    """Zero the gradient of every leaf outside the trainable fields `names`."""

    def keep(path, g):
        top = getattr(path[0], "name", None) if path else None
        return g if top in names else jnp.zeros_like(g)

    return jax.tree_util.tree_map_with_path(keep, grads)


def _site_name(site: str, layer: int | None) -> str:
    if "." in site:
        return site
    if layer is None:
        raise InputError(f"site {site!r} needs layer=")
    return sites_mod.act_name(site, layer)


def source_vectors(model: Model, data: CounterfactualData, site: str, batch_size: int = 32):
    """The source runs' activations at a named `site`, read at `source_positions`."""
    out = []
    for s in range(0, len(data), batch_size):
        acts = run(model, jnp.asarray(data.source[s : s + batch_size]), capture=site).cache[site]
        out.append(np.asarray(gather(acts, data.source_positions[s : s + batch_size])))
    return jnp.asarray(np.concatenate(out))


def _arrays(data: CounterfactualData, base, src, acts: SiteActs | None = None) -> _Arrays:
    return _Arrays(
        base,
        src,
        jnp.asarray(data.base_positions),
        jnp.asarray(data.base),
        jnp.asarray(data.base_lengths - 1),
        jnp.asarray(data.labels),
        None if acts is None else acts.cache,
        None if acts is None else acts.last_tok,
    )


def _prepare(model, data, feat, layer, site, acts, tcfg=None):
    """(static key, layer argument, device arrays) of a train or iia call."""
    _check_data(model, data)
    mask_on = bool(feat.learned_mask)
    tcfg = tcfg or TrainConfig()
    if site == "resid_pre":
        if layer is None:
            raise InputError("resid_pre needs layer=")
        _check_feat(model, feat, site)
        if acts is None or layer not in acts.layers:
            acts = site_acts(model, data, [layer])
        i = acts.layers.index(layer)
        if acts.mode == "decode":  # the layer a value: one program serves every layer
            every = tuple(range(model.config.n_layers))
            st = _Static(
                model.family, model.config, tcfg, None, True, None, mask_on, "decode", every
            )
            return st, jnp.asarray(layer), _arrays(data, None, acts.source[i], acts)
        layered = _layer_invariant(model)
        st = _Static(
            model.family, model.config, tcfg, None, layered, None if layered else layer, mask_on
        )
        assert acts.base is not None
        return st, jnp.asarray(layer), _arrays(data, acts.base[i], acts.source[i])
    name = _site_name(site, layer)
    st = _Static(model.family, model.config, tcfg, name, False, None, mask_on, "hooked")
    return st, jnp.asarray(0), _arrays(data, None, source_vectors(model, data, name))


def train(
    model: Model,
    data: CounterfactualData,
    featurizer: F.Featurizer,
    *,
    layer: int | None = None,
    site: str = "resid_pre",
    config: TrainConfig = TrainConfig(),
    acts: SiteActs | None = None,
) -> Trained:
    """Train `featurizer` on `data` at `resid_pre` of `layer` (or any other site: a name
    such as "attn_out" with `layer`, or a full name such as "blocks.3.hook_mlp_out").

    `acts` (from `site_acts`) reuses cached activations across featurizers. Compiled once
    per (model config, featurizer kind and shape, dataset shape, config): a second call
    with new values does not recompile.
    """
    _trainable(featurizer)
    st, l, a = _prepare(model, data, featurizer, layer, site, acts, config)
    return Trained(*_fit_jit(st, model.params, featurizer, jax.random.PRNGKey(config.seed), l, a))


def iia(
    model: Model,
    data: CounterfactualData,
    featurizer: F.Featurizer,
    *,
    layer: int | None = None,
    site: str = "resid_pre",
    acts: SiteActs | None = None,
    return_predictions: bool = False,
):
    """Interchange intervention accuracy of `featurizer` on `data` (hard masks)."""
    st, l, a = _prepare(model, data, featurizer, layer, site, acts)
    st = st._replace(tcfg=TrainConfig(), mask_on=False)
    preds = np.asarray(_predict_jit(st, model.params, featurizer, l, a))
    acc = float((preds == data.labels).mean())
    return (acc, preds) if return_predictions else acc


# ------------------------------------------------------------------------- layer search


def search(
    model: Model,
    train_data: CounterfactualData,
    test_data: CounterfactualData,
    make_featurizer: Callable[[Array], F.Featurizer] | F.Featurizer,
    layers,
    *,
    config: TrainConfig = TrainConfig(),
    train_acts: SiteActs | None = None,
    test_acts: SiteActs | None = None,
) -> dict:
    """Train a featurizer at `resid_pre` of every layer in `layers`; IIA on `test_data`.

    `make_featurizer(key)` builds the initial featurizer (for example
    `lambda k: rotation(k, d, 16)`); or pass featurizers stacked over `layers` (a leading
    axis, e.g. one PCA per layer from `stack`), trained if trainable. Returns
    `{"layers", "iia", "losses", "featurizers"}` with the featurizers stacked over layers.
    On layer-invariant families training and evaluation of every layer are one compiled
    program.
    """
    layers = _check_layers(model, layers)
    _check_data(model, train_data)
    _check_data(model, test_data)
    train_acts = train_acts or site_acts(model, train_data, layers)
    test_acts = test_acts or site_acts(model, test_data, layers)
    for acts in (train_acts, test_acts):
        if not set(layers) <= set(acts.layers):
            raise InputError(f"cached activations hold layers {acts.layers}, not all of {layers}")
    tr = np.array([train_acts.layers.index(l) for l in layers])
    te = np.array([test_acts.layers.index(l) for l in layers])
    keys = jax.random.split(jax.random.PRNGKey(config.seed), len(layers))  # batches
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)  # initial featurizers
    if isinstance(make_featurizer, F.Featurizer):
        inits = make_featurizer
        n_init = jax.tree.leaves(inits)[0].shape[0]
        if n_init != len(layers):
            raise InputError(f"{n_init} stacked featurizers for {len(layers)} layers")
    else:
        inits = jax.vmap(make_featurizer)(init_keys)
    first = take(inits, 0)
    _check_feat(model, first, "resid_pre")
    trainable = _has_training(first)
    if train_acts.mode != test_acts.mode:
        raise InputError(
            f"train activations are mode {train_acts.mode!r}, test ones {test_acts.mode!r}"
        )
    mode = train_acts.mode
    layered = mode == "decode" or _layer_invariant(model)

    def sel(x, i):
        return None if x is None else x[i]

    a = _arrays(train_data, sel(train_acts.base, tr), train_acts.source[tr], train_acts)
    t = _arrays(test_data, sel(test_acts.base, te), test_acts.source[te], test_acts)
    st = _Static(
        model.family,
        model.config,
        config,
        None,
        layered,
        None,
        first.learned_mask,
        mode,
        tuple(layers),
    )
    if layered:
        feats, losses, accs = _search_jit(
            st, model.params, inits, keys, jnp.asarray(layers), a, t, trainable
        )
    else:
        outs = []
        for q, l in enumerate(layers):
            sq = st._replace(layer=l)
            outs.append(
                _one_jit(
                    sq,
                    model.params,
                    take(inits, q),
                    keys[q],
                    jnp.asarray(l),
                    _layer_slice(a, q),
                    _layer_slice(t, q),
                    trainable,
                )
            )
        feats = stack([o[0] for o in outs])
        losses = jnp.stack([o[1] for o in outs])
        accs = jnp.stack([o[2] for o in outs])
    return {
        "layers": list(layers),
        "iia": [float(x) for x in np.asarray(accs)],
        "losses": np.asarray(losses),
        "featurizers": feats,
    }


def _layer_slice(a: _Arrays, q: int) -> _Arrays:
    return a._replace(base=None if a.base is None else a.base[q], src=a.src[q])


def _chunks(n: int, size: int = 16) -> Array:
    """Row indices `[n_chunks, size]`, the last chunk padded with its last row."""
    size = min(size, n)
    idx = np.arange(-(-n // size) * size)
    return jnp.asarray(np.minimum(idx, n - 1).reshape(-1, size))


def _has_training(feat: F.Featurizer) -> bool:
    return isinstance(feat, F.Rotation) or feat.learned_mask


from mechjax.causal.featurizers import stack, take  # noqa: E402, F401  (re-export)
from mechjax.causal.store import describe, load, save  # noqa: E402, F401  (re-export)
