"""SAE architectures as one pytree: encode, decode, and the call that returns both.

`SAE` holds the weights as array leaves and the architecture as static fields, so one
compiled program serves every SAE of an architecture and shape, `jax.grad` trains it and
`jax.vmap` sweeps over a stack of them. The conventions are SAELens's (weights
`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_out]`, `b_enc`, `b_dec`; `b_dec` subtracted from
the input before encoding when `apply_b_dec_to_input`), so files move both ways
(`mechjax.sae.formats`). The architectures (`arch`):

- `relu`: f = ReLU(W_enc^T (x - b_dec) + b_enc), trained with an L1 penalty weighted by
  each latent's decoder norm (Bricken et al. 2023; SAELens's "standard").
- `topk`: the k largest pre-activations, ReLU'd, the rest zero (Gao et al. 2024).
- `batchtopk`: trained with the k * batch largest over the whole batch (Bussmann et al.
  2024); at inference a JumpReLU with one learned threshold (`threshold`, every entry
  equal), as SAELens saves it.
- `jumprelu`: f = z * H(z - threshold) (Rajamanoharan et al. 2024b); the threshold gets a
  straight-through gradient through a rectangle kernel of width `bandwidth`
  (`jumprelu_fn`, `step_fn`).
- `abstopk`: the k pre-activations largest in absolute value, keeping their sign (the
  signed latents of Sun et al. 2025, "Dense SAE latents are features, not bugs").
- `gated`: a gate path (W_enc, b_enc as SAELens's b_gate) and a magnitude path sharing
  W_enc scaled by exp(r_mag) with bias b_mag (Rajamanoharan et al. 2024a).

A transcoder reads one site and writes another (`d_out` may differ from `d_in`, `meta`
names both sites), optionally with a linear skip `W_skip [d_in, d_out]` (Paulo et al.
2025): recon = decode(encode(x)) + x @ W_skip.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Float

from mechjax.errors import InputError
from mechjax.typing import Array

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "SAEMeta",
    "SAEOutput",
    "decode",
    "encode",
    "init_sae",
    "jumprelu_fn",
    "normalize_decoder",
    "step_fn",
]

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "abstopk", "gated")
_NEEDS_K = ("topk", "batchtopk", "abstopk")
_HAS_THRESHOLD = ("jumprelu", "batchtopk")


@dataclasses.dataclass(frozen=True)
class SAEMeta:
    """Where an SAE belongs: the model, the site it reads (and writes, for a
    transcoder), and how its training tokens were made. Static (hashable)."""

    model_name: str = ""
    hook_name: str = ""
    hook_name_out: str = ""  # a transcoder's output site ("" for an SAE)
    context_size: int = 0
    prepend_bos: bool = False
    dataset_path: str = ""


class SAEOutput(NamedTuple):
    """`SAE.__call__`: reconstruction, latents, pre-activations and L0 per input row."""

    recon: Array
    latents: Array
    pre: Array
    l0: Array


class SAE(struct.PyTreeNode):
    """A sparse autoencoder or transcoder. Array leaves are weights; the rest is static.

    `threshold` is present for `jumprelu` and `batchtopk`; `r_mag`, `b_mag` for `gated`
    (whose `b_enc` is the gate bias); `W_skip` for a skip transcoder. `k` is the number
    of active latents of the TopK kinds. `bandwidth` is the JumpReLU kernel width used by
    training's straight-through gradient.
    """

    # Any, not Array: pytree utilities (orbax, tree maps to shapes) rebuild an SAE with
    # other leaves (ShapeDtypeStruct, None), and the run-time type check would refuse them
    W_enc: Any  # [d_in, d_sae]
    b_enc: Any  # [d_sae]
    W_dec: Any  # [d_sae, d_out]
    b_dec: Any  # [d_out]
    threshold: Any = None  # [d_sae]
    r_mag: Any = None  # [d_sae]
    b_mag: Any = None  # [d_sae]
    W_skip: Any = None  # [d_in, d_out]
    arch: str = struct.field(pytree_node=False, default="relu")
    k: int = struct.field(pytree_node=False, default=0)
    apply_b_dec_to_input: bool = struct.field(pytree_node=False, default=True)
    bandwidth: float = struct.field(pytree_node=False, default=0.001)
    meta: SAEMeta = struct.field(pytree_node=False, default=SAEMeta())

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[-2])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[-1])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[-1])

    @property
    def is_transcoder(self) -> bool:
        return bool(self.meta.hook_name_out) or self.d_in != self.d_out

    def encode(self, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_sae"]:
        """Latents of `x` (inference: BatchTopK uses its threshold)."""
        return encode(self, x)

    def decode(self, f: Float[Array, "*batch d_sae"]) -> Float[Array, "*batch d_out"]:
        """f @ W_dec + b_dec (a transcoder's skip term needs x: see `__call__`)."""
        return decode(self, f)

    def __call__(self, x: Float[Array, "*batch d_in"]) -> SAEOutput:
        pre = pre_activations(self, x)
        f = activate(self, pre, x)
        return SAEOutput(reconstruct(self, f, x), f, pre, l0(f))

    def __repr__(self) -> str:
        site = f", site={self.meta.hook_name!r}" if self.meta.hook_name else ""
        k = f", k={self.k}" if self.arch in _NEEDS_K else ""
        kind = "Transcoder" if self.is_transcoder else "SAE"
        return f"{kind}({self.arch}, d_in={self.d_in}, d_sae={self.d_sae}{k}{site})"


# ----------------------------------------------------------------- the straight-through


def _rectangle(u: Array) -> Array:
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


def _sum_to(g: Array, shape: tuple) -> Array:
    """`g` summed over its leading axes down to `shape` (the threshold's [d_sae])."""
    return g.reshape((-1,) + tuple(shape)).sum(0)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu_fn(z: Array, threshold: Array, bandwidth: float) -> Array:
    """z * H(z - threshold), with the pseudo-derivative of Rajamanoharan et al. (2024b):
    d/dthreshold = -(threshold / bandwidth) K((z - threshold) / bandwidth), K a rectangle
    of width 1; d/dz = H(z - threshold)."""
    return z * (z > threshold)


def _jr_fwd(z, threshold, bandwidth):
    return jumprelu_fn(z, threshold, bandwidth), (z, threshold)


def _jr_bwd(bandwidth, res, g):
    z, threshold = res
    dz = g * (z > threshold)
    dt = g * (-(threshold / bandwidth) * _rectangle((z - threshold) / bandwidth))
    return dz.astype(z.dtype), _sum_to(dt, threshold.shape)


jumprelu_fn.defvjp(_jr_fwd, _jr_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def step_fn(z: Array, threshold: Array, bandwidth: float) -> Array:
    """H(z - threshold) (an L0 count), with d/dthreshold = -(1 / bandwidth) K(...) and
    no gradient to z."""
    return (z > threshold).astype(z.dtype)


def _st_fwd(z, threshold, bandwidth):
    return step_fn(z, threshold, bandwidth), (z, threshold)


def _st_bwd(bandwidth, res, g):
    z, threshold = res
    dt = g * (-(1.0 / bandwidth) * _rectangle((z - threshold) / bandwidth))
    return jnp.zeros_like(z), _sum_to(dt, threshold.shape)


step_fn.defvjp(_st_fwd, _st_bwd)


# ------------------------------------------------------------------- the forward pieces


def _check_width(sae: SAE, x: Array) -> None:
    if x.shape[-1] != sae.d_in:
        site = f" (trained on {sae.meta.hook_name!r})" if sae.meta.hook_name else ""
        raise InputError(
            f"input of width {x.shape[-1]} given to {sae!r}: it reads d_in = {sae.d_in}"
            f"{site}; expected [..., {sae.d_in}], got shape {tuple(x.shape)}"
        )


def sae_input(sae: SAE, x: Array) -> Array:
    """x - b_dec when `apply_b_dec_to_input` (SAELens's convention), else x."""
    _check_width(sae, x)
    return x - sae.b_dec if sae.apply_b_dec_to_input else x


def pre_activations(sae: SAE, x: Array) -> Array:
    """W_enc^T sae_input(x) + b_enc (the gate path for `gated`)."""
    return sae_input(sae, x) @ sae.W_enc + sae.b_enc


def _topk_mask(values: Array, k: int) -> Array:
    """Bool mask of the k largest entries of each row of `values` (last axis)."""
    _, idx = jax.lax.top_k(values, k)
    hot = jax.nn.one_hot(idx, values.shape[-1], dtype=jnp.bool_)
    return hot.any(-2)


def activate(sae: SAE, pre: Array, x: Array | None = None) -> Array:
    """Latents from pre-activations, at inference (BatchTopK by its threshold).

    `gated` needs the input for its magnitude path: pass `x` (as `encode` does).
    """
    arch = sae.arch
    if arch == "relu":
        return jax.nn.relu(pre)
    if arch == "topk":
        return jnp.where(_topk_mask(pre, sae.k), jax.nn.relu(pre), 0.0)
    if arch == "abstopk":
        return jnp.where(_topk_mask(jnp.abs(pre), sae.k), pre, 0.0)
    if arch in _HAS_THRESHOLD:
        assert sae.threshold is not None
        return jax.nn.relu(pre) * (pre > sae.threshold)
    if arch == "gated":
        if x is None:
            raise InputError("a gated SAE's latents need the input x: use sae.encode(x)")
        return (pre > 0) * jax.nn.relu(magnitude(sae, x))
    raise InputError(f"unknown SAE architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")


def magnitude(sae: SAE, x: Array) -> Array:
    """A gated SAE's magnitude pre-activations: sae_input(x) @ (W_enc * exp(r_mag)) + b_mag."""
    assert sae.r_mag is not None and sae.b_mag is not None
    return sae_input(sae, x) @ (sae.W_enc * jnp.exp(sae.r_mag)) + sae.b_mag


def encode(sae: SAE, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_sae"]:
    """The latents of `x` (a module-level function, so featurizers can hold it)."""
    return activate(sae, pre_activations(sae, x), x)


def decode(sae: SAE, f: Float[Array, "*batch d_sae"]) -> Float[Array, "*batch d_out"]:
    """f @ W_dec + b_dec."""
    return f @ sae.W_dec + sae.b_dec


def reconstruct(sae: SAE, f: Array, x: Array) -> Array:
    """decode(f), plus the skip term x @ W_skip of a skip transcoder."""
    out = decode(sae, f)
    if sae.W_skip is not None:
        out = out + x @ sae.W_skip
    return out


def l0(f: Array) -> Array:
    """Non-zero latents per row (signed latents count too)."""
    return (f != 0).sum(-1).astype(jnp.float32)


# ------------------------------------------------------------------------- construction


def normalize_decoder(sae: SAE) -> SAE:
    """The SAE with every decoder row at unit norm (the constraint of TopK training)."""
    norm = jnp.linalg.norm(sae.W_dec, axis=-1, keepdims=True)
    return sae.replace(W_dec=sae.W_dec / jnp.maximum(norm, 1e-8))


def init_sae(
    key: Array,
    d_in: int,
    d_sae: int,
    arch: str = "topk",
    *,
    k: int = 0,
    d_out: int | None = None,
    skip: bool = False,
    threshold: float = 0.001,
    bandwidth: float = 0.001,
    decoder_norm: float | None = None,
    apply_b_dec_to_input: bool | None = None,
    meta: SAEMeta = SAEMeta(),
) -> SAE:
    """A fresh SAE: decoder rows random directions of norm `decoder_norm` (default 1, and
    0.1 for `relu` as in Conerly et al. 2024), the encoder its transpose, biases zero.

    Args:
      arch: one of `ARCHITECTURES`.
      k: active latents of the TopK kinds (required there, ignored elsewhere).
      d_out: a transcoder's output width (default `d_in`: an SAE).
      skip: a transcoder's linear skip connection (zero-initialised).
      threshold: JumpReLU's initial threshold; BatchTopK's until training sets it.
      apply_b_dec_to_input: default True for an SAE, False for a transcoder.
    """
    _check_arch(arch, k, d_sae)
    d_out = d_in if d_out is None else d_out
    if apply_b_dec_to_input is None:
        apply_b_dec_to_input = d_out == d_in and not meta.hook_name_out
    if apply_b_dec_to_input and d_out != d_in:
        raise InputError(f"apply_b_dec_to_input needs d_out == d_in, got {d_out} and {d_in}")
    norm = decoder_norm if decoder_norm is not None else (0.1 if arch == "relu" else 1.0)
    w = jax.random.normal(key, (d_sae, d_out), jnp.float32)
    w = norm * w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    w_enc = w.T if d_out == d_in else _fresh_encoder(key, d_in, d_sae, norm)
    extra: dict[str, Any] = {}
    if arch in _HAS_THRESHOLD:
        extra["threshold"] = jnp.full((d_sae,), threshold, jnp.float32)
    if arch == "gated":
        extra["r_mag"] = jnp.zeros((d_sae,), jnp.float32)
        extra["b_mag"] = jnp.zeros((d_sae,), jnp.float32)
    if skip:
        extra["W_skip"] = jnp.zeros((d_in, d_out), jnp.float32)
    return SAE(
        W_enc=jnp.asarray(w_enc),
        b_enc=jnp.zeros((d_sae,), jnp.float32),
        W_dec=w,
        b_dec=jnp.zeros((d_out,), jnp.float32),
        arch=arch,
        k=int(k) if arch in _NEEDS_K else 0,
        apply_b_dec_to_input=bool(apply_b_dec_to_input),
        bandwidth=float(bandwidth),
        meta=meta,
        **extra,
    )


def _fresh_encoder(key: Array, d_in: int, d_sae: int, norm: float) -> Array:
    w = jax.random.normal(jax.random.fold_in(key, 1), (d_in, d_sae), jnp.float32)
    return norm * w / jnp.linalg.norm(w, axis=0, keepdims=True)


def _check_arch(arch: str, k: int, d_sae: int) -> None:
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown SAE architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    if arch in _NEEDS_K and not 0 < k <= d_sae:
        raise InputError(f"a {arch} SAE needs 0 < k <= d_sae = {d_sae}, got k = {k}")
