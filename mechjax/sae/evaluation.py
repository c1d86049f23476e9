"""How good an SAE is: reconstruction, sparsity, and the model's loss with it spliced in.

- `reconstruction(sae, x, y)`: MSE (summed over the model dimension, mean over rows),
  FVU = sum ||y - recon||^2 / sum ||y - mean y||^2, explained variance 1 - FVU, mean
  cosine between y and recon, mean L0.
- `evaluate(model, sae, tokens)`: over a token set, the model's next-token cross-entropy
  clean, with the SAE's reconstruction in place of the site's activation (through
  `mj.apply_fn`, the intervention algebra; a transcoder's output replaces its output
  site's activation), and with the site zero-ablated; CE loss recovered
  (CE_zero - CE_sae) / (CE_zero - CE_clean); KL(clean || spliced) per token; each
  latent's density (fraction of tokens it is non-zero on); dead (never fires) and dense
  (density > `dense_threshold`) fractions; reconstruction metrics over the same tokens.
  One compiled program per batch shape; one transfer of sums per batch.
- `density_histogram(density)`: counts over log10 density bins, dead latents apart.

The first `skip_first` positions are left out everywhere (the SAE is not spliced there and
their predictions are not scored), matching how `store` leaves them out of training.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from mechjax.errors import InputError
from mechjax.interventions import ablate, apply_fn
from mechjax.model import Model, run
from mechjax.progress import progress_bar, show_progress
from mechjax.sae.architectures import SAE, activate, pre_activations, reconstruct
from mechjax.typing import Array

__all__ = [
    "Reconstruction",
    "check_site",
    "density_histogram",
    "evaluate",
    "reconstruction",
    "splice_fn",
]


class Reconstruction(NamedTuple):
    mse: Array
    fvu: Array
    explained_variance: Array
    cosine: Array
    l0: Array


def reconstruction(
    sae: SAE, x: Float[Array, "n d_in"], y: Float[Array, "n d_out"] | None = None
) -> Reconstruction:
    """Reconstruction metrics of `sae` on rows `x` (targets `y`, default `x`)."""
    y = x if y is None else y
    out = sae(x)
    err = jnp.sum((out.recon - y) ** 2, -1)
    var = jnp.sum((y - y.mean(0)) ** 2, -1)
    fvu = err.sum() / jnp.maximum(var.sum(), 1e-12)
    cos = jnp.sum(out.recon * y, -1) / jnp.maximum(
        jnp.linalg.norm(out.recon, axis=-1) * jnp.linalg.norm(y, axis=-1), 1e-12
    )
    return Reconstruction(err.mean(), fvu, 1.0 - fvu, cos.mean(), out.l0.mean())


def splice_fn(sae: SAE, x: Array) -> Array:
    """The site's activation replaced by the SAE's reconstruction (for `mj.apply_fn`)."""
    return sae(x).recon


def check_site(
    model: Model, sae: SAE, site: str | None = None, site_out: str = ""
) -> tuple[str, str]:
    """The SAE's input (and output) site on `model`, checked to exist and to have the
    SAE's width. Raises InputError naming the site, the SAE and both widths."""
    from mechjax.harvest import site_width

    site = site or sae.meta.hook_name
    site_out = site_out or sae.meta.hook_name_out
    if not site:
        raise InputError(f"{sae!r} does not record its site: pass site= explicitly")
    for name, want, what in ((site, sae.d_in, "d_in"), (site_out, sae.d_out, "d_out")):
        if not name:
            continue
        if name not in model.sites:
            raise InputError(
                f"site {name!r} of {sae!r} is not a site of this model (see model.sites)"
            )
        got = site_width(model, name)
        if got != want:
            raise InputError(
                f"width mismatch: site {name!r} of this model has width {got}, but the SAE's "
                f"{what} is {want} ({sae!r}); it was trained on another site or model"
            )
    return site, site_out


def _ce(logits: Array, tokens: Array, skip: int) -> Array:
    """Per-row summed next-token CE over predictions from positions >= skip."""
    logp = jax.nn.log_softmax(logits[:, skip:-1].astype(jnp.float32), -1)
    tgt = tokens[:, skip + 1 :]
    return -jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0]


def _batch_sums(model, sae, tokens, positions, site, site_out, skip):
    """Sums over one batch: CE clean/spliced/zero, KL, recon errors, latent fire counts."""
    capture = (site,) if not site_out else (site, site_out)
    clean = run(model, tokens, capture=capture)
    x = clean.cache[site][:, skip:]
    y = x if not site_out else clean.cache[site_out][:, skip:]
    target_site = site_out or site
    if site_out:  # a transcoder: its output from the clean input, written at site_out
        full = jnp.concatenate(
            [clean.cache[site_out][:, :skip], reconstruct(sae, _lat(sae, x), x)], 1
        )
        spliced = run(model, tokens, {site_out: _patch(full)}).logits
    else:
        spliced = run(model, tokens, {site: apply_fn(splice_fn, sae, positions=positions)}).logits
    zero = run(model, tokens, {target_site: ablate("zero", positions=positions)}).logits
    lp_clean = jax.nn.log_softmax(clean.logits[:, skip:-1].astype(jnp.float32), -1)
    lp_spl = jax.nn.log_softmax(spliced[:, skip:-1].astype(jnp.float32), -1)
    kl = jnp.sum(jnp.exp(lp_clean) * (lp_clean - lp_spl), -1)
    f = _lat(sae, x)
    recon = reconstruct(sae, f, x)
    d = y.shape[-1]
    y2, r2 = y.reshape(-1, d), recon.reshape(-1, d)
    cos = jnp.sum(r2 * y2, -1) / jnp.maximum(
        jnp.linalg.norm(r2, axis=-1) * jnp.linalg.norm(y2, axis=-1), 1e-12
    )
    return {
        "ce_clean": _ce(clean.logits, tokens, skip).sum(),
        "ce_sae": _ce(spliced, tokens, skip).sum(),
        "ce_zero": _ce(zero, tokens, skip).sum(),
        "kl": kl.sum(),
        "n_pred": jnp.asarray(kl.size, jnp.float32),
        "sq_err": jnp.sum((r2 - y2) ** 2),
        "y_sum": y2.sum(0),
        "y_sq": jnp.sum(y2 * y2),
        "cos": cos.sum(),
        "l0": (f != 0).sum(),
        "fires": (f != 0).reshape(-1, f.shape[-1]).sum(0),
        "n_rows": jnp.asarray(y2.shape[0], jnp.float32),
    }


def _lat(sae: SAE, x: Array) -> Array:
    return activate(sae, pre_activations(sae, x), x)


def _patch(value):
    from mechjax.interventions import patch

    return patch(value)


_batch_jit = jax.jit(_batch_sums, static_argnames=("site", "site_out", "skip"))


def evaluate(
    model: Model,
    sae: SAE,
    tokens: Any,
    *,
    site: str | None = None,
    site_out: str = "",
    batch_size: int = 8,
    skip_first: int = 1,
    dense_threshold: float = 0.1,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Every metric of `sae` on `tokens [n, pos]` run through `model` (see the module).

    Returns a dict: ce_clean, ce_sae, ce_zero, ce_recovered, kl, mse, fvu,
    explained_variance, cosine, l0, dead_frac, dense_frac, density (numpy [d_sae]),
    n_tokens.
    """
    site, site_out = check_site(model, sae, site, site_out)
    host = np.asarray(tokens, np.int32)
    if host.ndim != 2 or host.shape[1] <= skip_first + 1:
        raise InputError(f"tokens must be [n, pos] with pos > {skip_first + 1}, got {host.shape}")
    n, n_pos = host.shape
    positions = jnp.arange(skip_first, n_pos)
    size = min(batch_size, n)
    totals: dict[str, np.ndarray] = {}
    spans = [(s, min(s + size, n)) for s in range(0, n, size)]
    bar = progress_bar(show_progress(progress, len(spans) > 1), len(spans), "sae eval", "batch")
    with bar:
        for a, b in spans:
            # a short last batch compiles once more; nothing is padded or reweighted
            sums = jax.device_get(
                _batch_jit(
                    model, sae, jnp.asarray(host[a:b]), positions, site, site_out, skip_first
                )
            )
            for key, v in sums.items():
                totals[key] = totals.get(key, 0) + np.asarray(v, np.float64)
            bar.update(1)
    return _summarise(totals, dense_threshold)


def _summarise(t: dict, dense_threshold: float) -> dict[str, Any]:
    n_pred, n_rows = float(t["n_pred"]), float(t["n_rows"])
    ce_clean, ce_sae, ce_zero = (float(t[k]) / n_pred for k in ("ce_clean", "ce_sae", "ce_zero"))
    mean = t["y_sum"] / n_rows
    var = float(t["y_sq"]) - n_rows * float(mean @ mean)
    fvu = float(t["sq_err"]) / max(var, 1e-12)
    density = t["fires"] / n_rows
    denom = ce_zero - ce_clean
    return {
        "ce_clean": ce_clean,
        "ce_sae": ce_sae,
        "ce_zero": ce_zero,
        "ce_recovered": (ce_zero - ce_sae) / denom if abs(denom) > 1e-12 else float("nan"),
        "kl": float(t["kl"]) / n_pred,
        "mse": float(t["sq_err"]) / n_rows,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "cosine": float(t["cos"]) / n_rows,
        "l0": float(t["l0"]) / n_rows,
        "dead_frac": float(np.mean(density == 0)),
        "dense_frac": float(np.mean(density > dense_threshold)),
        "density": density.astype(np.float32),
        "n_tokens": int(n_rows),
    }


def density_histogram(
    density: Any, bins: int = 30, lo: float = -6.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Counts of latents per log10(density) bin from `lo` to 0, and the dead count
    (density 0, kept apart since log10 is -inf there). Returns (counts, edges, n_dead)."""
    d = np.asarray(density, np.float64)
    live = d[d > 0]
    edges = np.linspace(lo, 0.0, bins + 1)
    counts, _ = np.histogram(np.clip(np.log10(live), lo, 0.0), edges)
    return counts, edges, int((d == 0).sum())
