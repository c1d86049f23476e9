"""Featurizers: invertible maps from a site's activation to features, as pytrees.

A featurizer turns an activation `h [..., d]` into `(f, err) = featurize(h)`, features
`f [..., n_features]` plus what `invert` needs to rebuild h (`err`: for a subspace, h and
its features), and back with `invert(f, err) == h` exactly; `invert(f2, err)` is h with
its features changed to f2 and everything they do not hold (the orthogonal complement, an
SAE's reconstruction error) kept. The variable a featurizer stands for is the features selected by
its `mask` (fixed for neurons, PCA and DAS; learned for boundless DAS and differential
binary masking). An interchange intervention (`mechjax.causal.interchange`) replaces the
selected features of a base activation with those of a source activation, so any
featurizer works with interchange interventions, training and IIA.

Every learnable quantity is an array leaf (so `jax.grad`, `jax.vmap` and optax see it);
only the functions of an SAE pair are static. The featurizers:

- `Identity`: the neurons themselves; `dims` picks which.
- `Subspace`: an orthonormal basis `[d, k]` and a mean (PCA, `pca(acts, k)`).
- `Rotation`: DAS (Geiger et al. 2024), k orthonormal directions learned through a free
  matrix `raw [d, k]`; the basis is `raw`'s QR factor (columns orthonormal to float
  precision whatever optax does to `raw`), and the rest of the space passes through.
- `BoundlessRotation`: boundless DAS (Wu et al. 2023): a rotation of the whole space (or
  its first m directions) with a learned sigmoid mask over the rotated basis.
- `NeuronMask`: differential binary masking over neurons (a learned sigmoid mask).
- `SAEFeatures`: any encoder/decoder pair (an SAE, a transcoder's encoder side): the
  features are the latents and `err` is the reconstruction error, so `invert` is exact.

Learned masks are soft during training, `sigmoid(logits / temperature)`, and hard at
evaluation (`logits > 0`): `mask(temperature=None)` gives the hard one.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax.errors import InputError

Array = jax.Array


def _orthonormal(raw: Array) -> Array:
    """Columns of `raw`'s QR factor, signs fixed so the map raw -> basis is continuous."""
    if raw.shape[-1] == 0:
        return raw
    q, r = jnp.linalg.qr(raw)
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(q.dtype)
    return q * sign


def _soft_or_hard(logits: Array, temperature) -> Array:
    if temperature is None:
        return (logits > 0).astype(logits.dtype)
    return jax.nn.sigmoid(logits / temperature)


class Featurizer(struct.PyTreeNode):
    """Interface: `featurize`, `invert`, `mask`, `n_features`, `width`."""

    def featurize(self, h: Array) -> tuple[Array, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def invert(self, f: Array, err: Any) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def mask(self, temperature=None) -> Array:
        """Which features are the variable: `[n_features]` in [0, 1] (hard when
        `temperature` is None)."""
        return jnp.ones((self.n_features,), jnp.float32)

    @property
    def n_features(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def width(self) -> int:  # pragma: no cover - interface
        """The activation width `d` the featurizer reads."""
        raise NotImplementedError

    @property
    def learned_mask(self) -> bool:
        return False


class Identity(Featurizer):
    """Neurons: f = h. `dims` (`[d]`, 1.0 on the variable's neurons) selects them."""

    dims: Array

    def featurize(self, h):
        return h, None

    def invert(self, f, err):
        return f

    def mask(self, temperature=None):
        return self.dims.astype(jnp.float32)

    @property
    def n_features(self):
        return int(self.dims.shape[-1])

    @property
    def width(self):
        return int(self.dims.shape[-1])


class Subspace(Featurizer):
    """f = (h - mean) @ basis for an orthonormal `basis [d, k]`; the rest passes through."""

    basis: Array
    mean: Array

    def _basis(self) -> Array:
        return self.basis

    def featurize(self, h):
        b = self._basis()
        f = (h - self.mean) @ b
        return f, (h, f, b)

    def invert(self, f, err):
        # h + (f - f_h) B^T: exactly h when the features are h's own (or k = 0)
        h, f_h, b = err
        return h + (f - f_h) @ b.T

    @property
    def n_features(self):
        return int(self.basis.shape[-1])

    @property
    def width(self):
        return int(self.basis.shape[0])


class Rotation(Subspace):
    """DAS: k learned orthonormal directions (the QR factor of the free `raw [d, k]`)."""

    def _basis(self) -> Array:
        return _orthonormal(self.raw)

    @property
    def raw(self) -> Array:
        return self.basis

    def directions(self) -> Array:
        """The orthonormal basis `[d, k]`."""
        return self._basis()


class BoundlessRotation(Rotation):
    """Boundless DAS: a rotation (`raw [d, m]`, m <= d) with a learned mask over it."""

    logits: Array = struct.field(default=None)

    def mask(self, temperature=None):
        return _soft_or_hard(self.logits, temperature)

    @property
    def learned_mask(self):
        return True


class NeuronMask(Identity):
    """Differential binary masking: identity features, a learned mask `logits [d]`."""

    logits: Array = struct.field(default=None)

    def mask(self, temperature=None):
        return _soft_or_hard(self.logits, temperature)

    @property
    def learned_mask(self):
        return True


class SAEFeatures(Featurizer):
    """f = encode(params, h); err = h - decode(params, f); invert(f, err) = decode + err.

    `encode` and `decode` are static (module-level) functions; `params` is any pytree.
    `dims` (`[n_latents]`, 1.0 on the variable's latents) selects them.
    """

    params: Any
    dims: Array
    encode: Callable = struct.field(pytree_node=False)
    decode: Callable = struct.field(pytree_node=False)
    d_in: int = struct.field(pytree_node=False, default=0)

    def featurize(self, h):
        f = self.encode(self.params, h)
        return f, (h, f)

    def invert(self, f, err):
        # h + decode(f) - decode(f_h): the reconstruction error stays, and h comes back
        # exactly when the latents are h's own
        h, f_h = err
        return h + (self.decode(self.params, f) - self.decode(self.params, f_h))

    def mask(self, temperature=None):
        return self.dims.astype(jnp.float32)

    @property
    def n_features(self):
        return int(self.dims.shape[-1])

    @property
    def width(self):
        return self.d_in


class SAEMask(SAEFeatures):
    """SAE latents with a learned mask `logits [n_latents]` (differential binary masking
    over an SAE's latents, as MIB selects a variable's SAE features); the SAE stays frozen."""

    logits: Array = struct.field(default=None)

    def mask(self, temperature=None):
        return _soft_or_hard(self.logits, temperature)

    @property
    def learned_mask(self):
        return True


# ----------------------------------------------------------------------- constructors


def _check_k(k: int, d: int, what: str) -> None:
    if not 0 <= k <= d:
        raise InputError(f"{what}: k = {k} features, but the site's width is {d}; need 0 <= k <= d")


def identity(d: int, dims=None) -> Identity:
    """Neurons; `dims`: indices (or a bool mask) of the variable's neurons, default all."""
    mask = np.ones(d, bool)
    if dims is not None:
        dims = np.asarray(dims)
        if dims.size == 0:  # an empty list is float64 to numpy: no neuron at all
            dims = dims.astype(np.int64)
        if dims.dtype == bool:
            if dims.shape != (d,):
                raise InputError(
                    f"identity: a bool dims mask must have shape ({d},), got {dims.shape}"
                )
            mask = dims
        else:
            if dims.size and (dims.min() < 0 or dims.max() >= d):
                raise InputError(
                    f"identity: dims must be in [0, {d}), got {dims.min()}..{dims.max()}"
                )
            mask = np.zeros(d, bool)
            mask[dims] = True
    return Identity(jnp.asarray(mask, jnp.float32))


def rotation(key: Array, d: int, k: int) -> Rotation:
    """DAS with k directions, initialised at a random orthonormal basis."""
    _check_k(k, d, "rotation")
    raw = jax.random.normal(key, (d, k), jnp.float32)
    return Rotation(_orthonormal(raw), jnp.zeros((d,), jnp.float32))


def boundless_rotation(
    key: Array, d: int, m: int | None = None, init: float = -1.0
) -> BoundlessRotation:
    """Boundless DAS over m rotated directions (default all d); mask logits start at
    `init` (a mostly-closed mask that training opens)."""
    m = d if m is None else m
    _check_k(m, d, "boundless_rotation")
    raw = jax.random.normal(key, (d, m), jnp.float32)
    return BoundlessRotation(
        _orthonormal(raw), jnp.zeros((d,), jnp.float32), jnp.full((m,), init, jnp.float32)
    )


def neuron_mask(d: int, init: float = -1.0) -> NeuronMask:
    """Differential binary masking over d neurons, logits starting at `init`."""
    return NeuronMask(jnp.ones((d,), jnp.float32), jnp.full((d,), init, jnp.float32))


def pca(acts, k: int) -> Subspace:
    """The top-k principal directions of `acts [n, d]` (centred by their mean)."""
    x = np.asarray(acts, np.float64).reshape(-1, np.shape(acts)[-1])
    d = x.shape[1]
    _check_k(k, d, "pca")
    if x.shape[0] < 2:
        raise InputError(f"pca needs at least 2 activations, got {x.shape[0]}")
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = np.zeros((d, k))
    basis[:, : min(k, vt.shape[0])] = vt[:k].T
    return Subspace(jnp.asarray(basis, jnp.float32), jnp.asarray(mean, jnp.float32))


def sae_features(encode: Callable, decode: Callable, params, d_in: int, n_latents: int, dims=None):
    """An SAE (or any encoder/decoder pair) as a featurizer; `dims` as for `identity`."""
    mask = identity(n_latents, dims).dims
    return SAEFeatures(params, mask, encode, decode, d_in)


def sae_mask(
    encode: Callable, decode: Callable, params, d_in: int, n_latents: int, init: float = -1.0
) -> SAEMask:
    """An SAE as a featurizer whose latents are chosen by a learned mask (logits start at
    `init`, a mostly-closed mask that training opens); DAS's `train` updates the logits
    only."""
    ones = jnp.ones((n_latents,), jnp.float32)
    return SAEMask(params, ones, encode, decode, d_in, jnp.full((n_latents,), init, jnp.float32))


def from_sae(sae, dims=None, *, learned: bool = False, init: float = -1.0) -> SAEFeatures:
    """A `mechjax.sae.SAE` as a featurizer: its latents `dims` (default all), or, with
    `learned=True`, a learned mask over them (`sae_mask`). The SAE must read and write
    the same site (not a transcoder)."""
    from mechjax.sae import architectures as A

    if sae.is_transcoder:
        raise InputError(
            f"from_sae: {sae!r} is a transcoder (it writes {sae.meta.hook_name_out or 'another site'}); "
            "only an SAE that reconstructs its own site can featurize it"
        )
    if learned:
        return sae_mask(A.encode, A.decode, sae, sae.d_in, sae.d_sae, init)
    return sae_features(A.encode, A.decode, sae, sae.d_in, sae.d_sae, dims)


# ----------------------------------------------------------------------- interchange


def interchange(feat: Featurizer, h_base: Array, h_source: Array, temperature=None) -> Array:
    """h <- F^-1(F(h_base) with the masked features taken from F(h_source)).

    A hard mask (`temperature=None`) selects features exactly (with the identity and
    every dimension the result is `h_source` itself); a soft one blends them.
    """
    fb, err = feat.featurize(h_base)
    fs, _ = feat.featurize(h_source)
    m = feat.mask(temperature)
    f = jnp.where(m > 0.5, fs, fb) if temperature is None else fb + m * (fs - fb)
    return feat.invert(f, err)


def interchange_many(feats: Featurizer, masks: Array, h_base: Array, h_sources: Array) -> Array:
    """Several sources at once: source i `[n_src, ..., d]` gives the features where
    `masks[i]` (bool `[n_src, n_features]`) is True; later sources win on overlap."""
    if h_sources.shape[0] != masks.shape[0]:
        raise InputError(
            f"interchange_many: {h_sources.shape[0]} sources but {masks.shape[0]} masks"
        )
    f, err = feats.featurize(h_base)
    for i in range(h_sources.shape[0]):
        fs, _ = feats.featurize(h_sources[i])
        f = jnp.where(masks[i], fs, f)
    return feats.invert(f, err)


def orthogonality_error(feat: Featurizer) -> float:
    """max |B^T B - I| of a subspace/rotation featurizer's basis."""
    b = feat._basis() if isinstance(feat, Subspace) else None
    if b is None:
        raise InputError(f"{type(feat).__name__} has no basis")
    return float(jnp.abs(b.T @ b - jnp.eye(b.shape[1])).max())


def take(stacked_feats: Featurizer, i: int) -> Featurizer:
    """Featurizer `i` of a stack (as `das.search` returns them)."""
    return jax.tree.map(lambda x: x[i], stacked_feats)


def stack(feats) -> Featurizer:
    """Featurizers of one kind and shape stacked on a leading axis (for `das.search`)."""
    return jax.tree.map(lambda *x: jnp.stack(x), *feats)
