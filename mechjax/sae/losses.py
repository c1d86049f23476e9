"""Training objectives of every SAE architecture, and the aux-k loss for dead latents.

`sae_loss(sae, x, y, dead, coeffs)` returns the loss and a `LossParts` with the pieces a
trainer logs and the latents it needs for dead-latent and density tracking. x is the
input site's activations `[n, d_in]`, y the target (x itself for an SAE, the output
site's activations for a transcoder). Reconstruction error is the squared error summed
over the model dimension and averaged over tokens, as SAELens and Gao et al. (2024) use.

- `relu`: MSE + l1 * sum_i f_i ||W_dec_i|| (the L1 penalty weighted by decoder norms,
  Conerly et al. 2024).
- `topk`, `abstopk`: MSE (+ aux-k).
- `batchtopk`: the k * n largest ReLU'd pre-activations over the batch (Bussmann et al.
  2024) (+ aux-k); the smallest kept value is returned for the inference threshold.
- `jumprelu`: MSE + l0_coeff * sum_i H(z_i - threshold_i), both through the
  straight-through estimators of `architectures` (Rajamanoharan et al. 2024b).
- `gated`: MSE + l1 * ||ReLU(gate pre) * ||W_dec|| ||_1 + the auxiliary reconstruction
  of ReLU(gate pre) through a frozen decoder (Rajamanoharan et al. 2024a).

aux-k (Gao et al. 2024): the residual e = y - recon is reconstructed from the `aux_k`
largest pre-activations among the dead latents, ||e - W_dec^T z_aux||^2 / ||e - mean e||^2,
scaled by min(n_dead / aux_k, 1) so it fades as latents revive.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mechjax.sae.architectures import (
    SAE,
    jumprelu_fn,
    magnitude,
    pre_activations,
    reconstruct,
    step_fn,
)
from mechjax.typing import Array

__all__ = [
    "Coeffs",
    "LossParts",
    "aux_k_loss",
    "batch_topk",
    "sae_loss",
    "sparse_decode",
    "topk_indices",
]


class Coeffs(NamedTuple):
    """Loss coefficients; array leaves, so a sweep over them is one compiled program."""

    l1: Array | float = 0.0  # relu, gated
    l0: Array | float = 0.0  # jumprelu
    aux: Array | float = 1.0 / 32  # aux-k (Gao et al.)


class LossParts(NamedTuple):
    mse: Array
    sparsity: Array
    aux: Array
    fires: Array  # [d_sae]: rows of the batch each latent is non-zero on
    l0: Array  # mean non-zero latents per row
    recon: Array
    batch_threshold: Array  # BatchTopK: smallest kept activation (else 0)


def batch_topk(pre: Array, k: int) -> tuple[Array, Array]:
    """The k * n largest ReLU'd pre-activations of the batch `pre [n, d_sae]` (the rest
    zero) and the smallest positive value kept."""
    acts = jax.nn.relu(pre)
    n = acts.shape[0]
    flat = acts.reshape(-1)
    vals, idx = jax.lax.top_k(flat, k * n)
    out = jnp.zeros_like(flat).at[idx].set(vals).reshape(acts.shape)
    smallest = jnp.min(jnp.where(vals > 0, vals, jnp.inf))
    return out, jnp.where(jnp.isfinite(smallest), smallest, 0.0)


def aux_k_loss(
    sae: SAE, pre: Array, residual: Array, dead: Array, aux_k: int, signed: bool = False
) -> Array:
    """Gao et al.'s auxiliary loss: the residual from the top `aux_k` dead latents.

    `pre [n, d_sae]` pre-activations, `residual [n, d_out]` the (stopped) reconstruction
    error, `dead [d_sae]` bool; `signed` ranks by |pre| and keeps the sign (AbsoluteTopK).
    Zero when nothing is dead.
    """
    k = min(aux_k, pre.shape[-1])
    n_dead = jnp.sum(dead)
    score = jnp.abs(pre) if signed else jax.nn.relu(pre)
    _, idx = jax.lax.top_k(jnp.where(dead, score, -jnp.inf), k)
    picked = jnp.take_along_axis(pre if signed else jax.nn.relu(pre), idx, -1)
    vals = jnp.where(jnp.take(dead, idx), picked, 0.0)
    z = jnp.zeros_like(pre).at[jnp.arange(pre.shape[0])[:, None], idx].set(vals)
    e_hat = z @ sae.W_dec
    e = jax.lax.stop_gradient(residual)
    num = jnp.sum((e - e_hat) ** 2, -1).mean()
    den = jnp.sum((e - e.mean(0)) ** 2, -1).mean()
    scale = jnp.minimum(n_dead / k, 1.0)
    return jnp.where(n_dead > 0, scale * num / jnp.maximum(den, 1e-12), 0.0)


def _mse(y: Array, recon: Array) -> Array:
    return jnp.sum((recon - y) ** 2, -1).mean()


def _dec_norms(sae: SAE) -> Array:
    return jnp.linalg.norm(sae.W_dec, axis=-1)


def topk_indices(sae: SAE, pre: Array) -> tuple[Array, Array]:
    """The k active latents of each row as (values [n, k], indices [n, k]): the largest
    pre-activations ReLU'd (`topk`), or the largest in absolute value with their sign
    (`abstopk`)."""
    signed = sae.arch == "abstopk"
    _, idx = jax.lax.top_k(jnp.abs(pre) if signed else pre, sae.k)
    vals = jnp.take_along_axis(pre, idx, -1)
    return (vals if signed else jax.nn.relu(vals)), idx


def sparse_decode(w_dec: Array, vals: Array, idx: Array) -> Array:
    """sum_j vals[n, j] * w_dec[idx[n, j]]: the decoder applied to k latents per row,
    without the dense [n, d_sae] latents (k/d_sae of a dense decoder's work; its
    gradient to w_dec is a scatter-add of the same size)."""
    return jnp.einsum("nk,nkd->nd", vals, jnp.take(w_dec, idx, axis=0))


def sae_loss(
    sae: SAE, x: Array, y: Array, dead: Array, coeffs: Coeffs, aux_k: int = 0
) -> tuple[Array, LossParts]:
    """The training loss of `sae` on inputs `x [n, d_in]` and targets `y [n, d_out]`.

    `dead [d_sae]` marks latents that have not fired for the trainer's window (used by
    aux-k when `aux_k > 0`, for the TopK kinds; computed only when a latent is dead).
    TopK and AbsoluteTopK decode their k latents sparsely (`sparse_decode`).
    """
    arch = sae.arch
    pre = pre_activations(sae, x)
    zero = jnp.zeros((), jnp.float32)
    sparsity, aux, thr = zero, zero, zero
    if arch in ("topk", "abstopk"):
        vals, idx = topk_indices(sae, pre)
        recon = sparse_decode(sae.W_dec, vals, idx) + sae.b_dec
        if sae.W_skip is not None:
            recon = recon + x @ sae.W_skip
        on = (vals != 0).astype(jnp.float32)
        fires = jnp.zeros((sae.d_sae,), jnp.float32).at[idx.reshape(-1)].add(on.reshape(-1))
        l0_mean = on.sum(-1).mean()
    else:
        if arch == "relu":
            f = jax.nn.relu(pre)
            sparsity = coeffs.l1 * (f * _dec_norms(sae)).sum(-1).mean()
        elif arch == "batchtopk":
            f, thr = batch_topk(pre, sae.k)
        elif arch == "jumprelu":
            assert sae.threshold is not None
            f = jnp.asarray(jumprelu_fn(pre, sae.threshold, sae.bandwidth))
            steps = jnp.asarray(step_fn(pre, sae.threshold, sae.bandwidth))
            sparsity = coeffs.l0 * steps.sum(-1).mean()
        elif arch == "gated":
            gate = jax.nn.relu(pre)
            f = (pre > 0) * jax.nn.relu(magnitude(sae, x))
            sparsity = coeffs.l1 * (gate * _dec_norms(sae)).sum(-1).mean()
            frozen = jax.lax.stop_gradient(sae.W_dec), jax.lax.stop_gradient(sae.b_dec)
            aux = _mse(y, gate @ frozen[0] + frozen[1])
        else:  # pragma: no cover - init_sae and load refuse other names
            raise ValueError(arch)
        recon = reconstruct(sae, f, x)
        on = (f != 0).astype(jnp.float32)
        fires, l0_mean = on.sum(0), on.sum(-1).mean()
    mse = _mse(y, recon)
    if aux_k and arch in ("topk", "batchtopk", "abstopk"):
        signed = arch == "abstopk"
        aux = jax.lax.cond(
            jnp.any(dead),
            lambda s: coeffs.aux * aux_k_loss(s, pre, y - recon, dead, aux_k, signed),
            lambda s: jnp.zeros((), jnp.float32),
            sae,
        )
    loss = mse + sparsity + aux
    return loss, LossParts(mse, sparsity, aux, fires, l0_mean, recon, thr)
