"""`path_patch`: patching the path sender heads -> receiver sites (Wang et al. 2022)."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import sites as sites_mod
from mechjax.errors import InputError
from mechjax.interventions import Patch, _as_index
from mechjax.model import Model, run
from mechjax.patching.blocks import _check_pair
from mechjax.patching.static import join_static, split_static
from mechjax.patching.sweep import PatchResult, _chunk


def path_patch(
    model: Model,
    clean,
    corrupted,
    metric: Callable[[jax.Array], jax.Array],
    receivers: Sequence[tuple[str, Sequence[int] | None]],
    *,
    freeze_mlps: bool = False,
    attention_mask=None,
    chunk_size: int | None = None,
    memory_mb: float = 512.0,
) -> PatchResult:
    """Path patching from every sender head to `receivers`; grid `[layer, head]`.

    For each sender head (l, h): (1) run the clean prompt with head (l, h)'s `z` taken
    from the corrupted run and every other head's `z` frozen to its clean value (and the
    MLP outputs too if `freeze_mlps`), recording the receiver sites; (2) run the clean
    prompt with only the receiver sites patched to those values; the metric of (2) fills
    the grid. Noising direction, as Wang et al. (2022).

    Args:
      receivers: (site name, heads or None) pairs, e.g.
        `[("blocks.3.attn.hook_q", [0, 2])]` or `[("blocks.5.hook_resid_post", None)]`.
    """
    clean, corrupted = _check_pair(clean, corrupted)
    if not receivers:
        raise InputError("path_patch needs at least one receiver site")
    n, valid = model.config.n_layers, model.sites
    sites_mod.check([r[0] for r in receivers], valid, what="receiver site")
    z_names = [sites_mod.act_name("z", l) for l in range(n)]
    mlp_names = [sites_mod.act_name("mlp_out", l) for l in range(n)] if freeze_mlps else []
    c_out = run(model, clean, capture=z_names + mlp_names, attention_mask=attention_mask)
    k_out = run(model, corrupted, capture=z_names, attention_mask=attention_mask)
    z_clean = jnp.stack([c_out.cache[x] for x in z_names])
    z_corr = jnp.stack([k_out.cache[x] for x in z_names])
    mlp_clean = tuple(c_out.cache[x] for x in mlp_names)
    n_heads = z_clean.shape[3]
    senders = jnp.asarray(np.arange(n * n_heads), jnp.int32)
    chunk = _chunk(model, clean.shape, int(senders.shape[0]), chunk_size, memory_mb / 2)
    arrays, static = split_static(metric)
    recv = tuple((name, None if h is None else tuple(int(x) for x in h)) for name, h in receivers)
    grid = _path_sweep(
        model,
        clean,
        attention_mask,
        z_clean,
        z_corr,
        mlp_clean,
        senders,
        arrays,
        static=static,
        receivers=recv,
        chunk=chunk,
    )
    return PatchResult(
        grid.reshape(n, n_heads),
        ("layer", "head"),
        metric(c_out.logits),
        metric(k_out.logits),
        np.arange(n),
    )


@functools.partial(jax.jit, static_argnames=("static", "receivers", "chunk"))
def _path_sweep(
    model, clean, mask, z_clean, z_corr, mlp_clean, senders, arrays, *, static, receivers, chunk
):
    metric = join_static(arrays, static)
    n, n_heads = z_clean.shape[0], z_clean.shape[3]
    recv_names = tuple(r[0] for r in receivers)

    def element(s):
        sel = (jnp.arange(n * n_heads) == s).reshape(n, 1, 1, n_heads, 1)
        z = jnp.where(sel, z_corr, z_clean)
        hooks = {sites_mod.act_name("z", l): Patch(z[l]) for l in range(n)}
        for l, m in enumerate(mlp_clean):
            hooks[sites_mod.act_name("mlp_out", l)] = Patch(m)
        for name in recv_names:  # receivers read the frozen run, not their own patch
            hooks.pop(name, None)
        cache = run(model, clean, hooks, capture=recv_names, attention_mask=mask).cache
        hooks2 = {name: Patch(cache[name], heads=_as_index(h)) for name, h in receivers}
        return metric(run(model, clean, hooks2, attention_mask=mask).logits)

    return jax.lax.map(element, senders, batch_size=chunk)
