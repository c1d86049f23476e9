"""Training SAEs and transcoders: one compiled step (model forward, SAE, update), the
resumable loop of `mechjax.training`, dead-latent and density tracking.

`train_sae(source, config, ...)` trains on an `ActivationStore` or a `TokenSource` (then
the language model runs inside the step, up to the site). The step is one program:
activations, the architecture's loss (`mechjax.sae.losses`), Adam with a warmup/decay
schedule (`mechjax.training.lr_schedule`), then the constraints: decoder rows at unit
norm for the TopK kinds and JumpReLU (their gradient's component along each row removed
first, as in Gao et al. 2024), thresholds kept positive, BatchTopK's inference threshold
an average of the batches' smallest kept activation.

What a run tracks (`Stats`, part of the checkpointed state, so a resumed run continues
them exactly): steps since each latent last fired (dead = more than `dead_steps`), an
exponential average of each latent's firing rate (density), tokens seen. Every step logs
loss, MSE, FVU, L0 and the dead fraction; `eval_every` steps evaluate on held-out rows.

Everything `mechjax.training.train` gives comes along: orbax checkpoints, resume after a
kill bit-identical (batches are a function of the seed and the step), metrics.jsonl and
eval.jsonl, a progress bar. With `mesh=`, the batch is split over the mesh's `data` axis
(data parallel) and the optimizer state sharded ZeRO-style (`mechjax.sharding`); the
result equals one device's to float tolerance.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from mechjax import training as T
from mechjax.errors import InputError
from mechjax.sae.architectures import SAE, SAEMeta, init_sae, normalize_decoder
from mechjax.sae.losses import Coeffs, sae_loss
from mechjax.sae.store import ActivationStore, TokenSource, batch_acts
from mechjax.typing import Array

__all__ = ["SAETrainConfig", "Stats", "TrainedSAE", "make_sae_step", "train_sae"]

_UNIT_NORM = ("topk", "batchtopk", "abstopk", "jumprelu")


@dataclasses.dataclass(frozen=True)
class SAETrainConfig:
    """Settings of one SAE training run (defaults: a TopK SAE of 8x width, k = 32).

    `batch_size` counts activation rows (tokens); a `TokenSource` rounds it to whole
    sequences. `aux_k` None: d_in // 2 for the TopK kinds (Gao et al.), 0 elsewhere.
    `dead_steps` None: about 10M tokens' worth of steps, at most `steps // 4`.
    """

    arch: str = "topk"
    d_sae: int = 4608
    k: int = 32
    steps: int = 1000
    batch_size: int = 4096
    lr: float = 4e-4
    warmup: int = 50
    decay: str = "linear"
    decay_steps: int | None = None
    b1: float = 0.9
    b2: float = 0.999
    l1: float = 5.0
    l0: float = 1e-3
    aux_k: int | None = None
    aux_coeff: float = 1.0 / 32
    dead_steps: int | None = None
    density_decay: float = 0.99
    threshold_init: float = 0.001
    bandwidth: float = 0.001
    skip: bool = False
    init_b_dec: bool = True
    seed: int = 0

    def replace(self, **kw) -> SAETrainConfig:
        return dataclasses.replace(self, **kw)


class Stats(struct.PyTreeNode):
    """Per-latent tracking carried in the training state."""

    since_fired: Any  # int32 [d_sae]: steps since the latent was last non-zero
    density: Any  # float32 [d_sae]: EMA of the fraction of tokens it fires on
    tokens: Any  # float32 scalar: activation rows seen
    threshold: Any  # float32 scalar: BatchTopK's running inference threshold


class TrainedSAE(NamedTuple):
    sae: SAE
    stats: Stats
    history: list[dict]
    evals: list[dict]


def _fresh_stats(d_sae: int) -> Stats:
    return Stats(
        jnp.zeros((d_sae,), jnp.int32),
        jnp.zeros((d_sae,), jnp.float32),
        jnp.zeros((), jnp.float32),
        jnp.zeros((), jnp.float32),
    )


def optimizer(cfg: SAETrainConfig) -> optax.GradientTransformation:
    """Adam on the SAE under `lr_schedule`; the stats are never touched by it."""
    sched = T.lr_schedule(
        cfg.lr, cfg.steps, warmup=cfg.warmup, decay=cfg.decay, decay_steps=cfg.decay_steps
    )
    adam = optax.adam(sched, b1=cfg.b1, b2=cfg.b2)
    return optax.multi_transform(
        {"train": adam, "frozen": optax.set_to_zero()}, {"sae": "train", "stats": "frozen"}
    )


def _project_grad(sae: SAE, g: SAE) -> SAE:
    """Remove each decoder row's gradient component along the (unit) row."""
    w = sae.W_dec
    par = jnp.sum(g.W_dec * w, -1, keepdims=True) / jnp.maximum(
        jnp.sum(w * w, -1, keepdims=True), 1e-12
    )
    return g.replace(W_dec=g.W_dec - par * w)


def _constrain(sae: SAE, thr: Array | None) -> SAE:
    if sae.arch in _UNIT_NORM:
        sae = normalize_decoder(sae)
    if sae.arch == "jumprelu" and sae.threshold is not None:
        sae = sae.replace(threshold=jnp.maximum(sae.threshold, 1e-6))
    if sae.arch == "batchtopk" and thr is not None and sae.threshold is not None:
        sae = sae.replace(threshold=jnp.full_like(sae.threshold, thr))
    return sae


def make_sae_step(
    cfg: SAETrainConfig,
    opt: optax.GradientTransformation,
    *,
    site: str = "",
    site_out: str = "",
    skip_first: int = 1,
    dead_steps: int = 1000,
    aux_k: int = 0,
    jit: bool = True,
    out_shardings: Any = None,
) -> Callable:
    """`step(state, batch) -> (state, metrics)` for `mechjax.training.train`: the state's
    params are `{"sae": SAE, "stats": Stats}`; a batch is any source's (`store`)."""
    coeffs = Coeffs(cfg.l1, cfg.l0, cfg.aux_coeff)

    def step(state: T.TrainState, batch):
        rng, _ = jax.random.split(state.rng)
        sae, stats = state.params["sae"], state.params["stats"]
        x, y = batch_acts(batch, site, site_out, skip_first)
        x = x.astype(jnp.float32)
        y = x if y is None else y.astype(jnp.float32)
        dead = stats.since_fired >= dead_steps
        (loss, parts), g = jax.value_and_grad(
            lambda s: sae_loss(s, x, y, dead, coeffs, aux_k), has_aux=True
        )(sae)
        if sae.arch in _UNIT_NORM:
            g = _project_grad(sae, g)
        zero_stats = jax.tree.map(jnp.zeros_like, stats)
        grads: Any = {"sae": g, "stats": zero_stats}
        updates, opt_state = opt.update(grads, state.opt_state)
        new: Any = optax.apply_updates(cast(Any, {"sae": sae, "stats": stats}), updates)
        n = jnp.asarray(x.shape[0], jnp.float32)
        rate = parts.fires / n
        thr = jnp.where(
            stats.tokens > 0, 0.99 * stats.threshold + 0.01 * parts.batch_threshold,
            parts.batch_threshold,
        )  # fmt: skip
        d = cfg.density_decay
        new_stats = Stats(
            jnp.where(rate > 0, 0, stats.since_fired + 1),
            jnp.where(stats.tokens > 0, d * stats.density + (1 - d) * rate, rate),
            stats.tokens + n,
            thr,
        )
        new_sae = _constrain(new["sae"], thr if sae.arch == "batchtopk" else None)
        var = jnp.sum((y - y.mean(0)) ** 2, -1).mean()
        metrics = {
            "loss": loss,
            "mse": parts.mse,
            "fvu": parts.mse / jnp.maximum(var, 1e-12),
            "l0": parts.l0,
            "sparsity_loss": parts.sparsity,
            "aux_loss": parts.aux,
            "dead_frac": (new_stats.since_fired >= dead_steps).mean(),
        }
        params = {"sae": new_sae, "stats": new_stats}
        return T.TrainState(params, opt_state, state.step + 1, rng), metrics

    if not jit:
        return step
    if out_shardings is None:
        return jax.jit(step)
    return jax.jit(step, out_shardings=out_shardings)


def _dead_steps(cfg: SAETrainConfig, batch_rows: int) -> int:
    if cfg.dead_steps is not None:
        return cfg.dead_steps
    return max(1, min(10_000_000 // max(batch_rows, 1), max(cfg.steps // 4, 1)))


def _aux_k(cfg: SAETrainConfig, d_in: int) -> int:
    if cfg.aux_k is not None:
        return cfg.aux_k
    return d_in // 2 if cfg.arch in ("topk", "batchtopk", "abstopk") else 0


def init_for(source, cfg: SAETrainConfig, meta: SAEMeta = SAEMeta()) -> SAE:
    """A fresh SAE for `source`: sizes from it, b_dec at the mean of a sample (when the
    SAE subtracts it from the input; for a transcoder, at the targets' mean)."""
    x, y = source.sample(min(4096, cfg.batch_size * 2), seed=cfg.seed + 1)
    d_in = x.shape[1]
    d_out = d_in if y is None else y.shape[1]
    sae = init_sae(
        jax.random.PRNGKey(cfg.seed),
        d_in,
        cfg.d_sae,
        cfg.arch,
        k=cfg.k,
        d_out=d_out,
        skip=cfg.skip,
        threshold=cfg.threshold_init,
        bandwidth=cfg.bandwidth,
        meta=meta,
    )
    if cfg.init_b_dec:
        target = x if y is None else y
        sae = sae.replace(b_dec=jnp.asarray(target.mean(0), jnp.float32))
    return sae


def train_sae(
    source: ActivationStore | TokenSource,
    cfg: SAETrainConfig = SAETrainConfig(),
    *,
    sae: SAE | None = None,
    meta: SAEMeta | None = None,
    out_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    eval_every: int = 0,
    eval_rows: int = 8192,
    mesh=None,
    stop_after: int | None = None,
    progress: bool = True,
    callbacks=(),
) -> TrainedSAE:
    """Train an SAE (or transcoder) on `source` with `cfg`; resumable from `out_dir`.

    Args:
      source: an `ActivationStore` or a `TokenSource` (activations made in the step).
      sae: a starting SAE (default: `init_for(source, cfg)`).
      meta: where the SAE belongs (default: the source's site(s)).
      out_dir: checkpoints, metrics.jsonl, eval.jsonl; a rerun resumes from it.
      eval_every: evaluate on `eval_rows` held-out rows every this many steps (0: never).
      mesh: a `mechjax.sharding` mesh: data parallel over its `data` axis.
      stop_after: stop after this many steps without a final save (a kill, for tests).
    Returns:
      `TrainedSAE(sae, stats, history, evals)`.
    """
    if meta is None:
        meta = SAEMeta(hook_name=source.site, hook_name_out=source.site_out)
    sae = init_for(source, cfg, meta) if sae is None else sae
    if isinstance(source, TokenSource):
        seqs = source.seqs_for(cfg.batch_size)
        batch_rows, draw = seqs * source.per_seq, source.batches(seqs, cfg.seed)
        site, site_out, skip = source.site, source.site_out, source.skip_first
    elif isinstance(source, ActivationStore):
        batch_rows, draw = cfg.batch_size, source.batches(cfg.batch_size, cfg.seed)
        site, site_out, skip = "", "", 0
    else:
        raise InputError(f"source must be an ActivationStore or a TokenSource, got {type(source)}")
    params = {"sae": sae, "stats": _fresh_stats(sae.d_sae)}
    kw: dict[str, Any] = dict(site=site, site_out=site_out, skip_first=skip,
              dead_steps=_dead_steps(cfg, batch_rows), aux_k=_aux_k(cfg, sae.d_in))  # fmt: skip
    batch_fn = lambda key, s: draw(s)
    if mesh is not None:
        opt = optimizer(cfg)
        step_fn, batch_fn = _sharded(cfg, opt, params, mesh, draw, kw)
    else:
        opt, step_fn = _cached_step(cfg, kw)
    eval_fn = None
    if eval_every:
        ex, ey = source.sample(eval_rows, seed=cfg.seed + 2)
        ex, ey = jnp.asarray(ex), (None if ey is None else jnp.asarray(ey))
        eval_fn = lambda p: _eval_rows(p["sae"], p["stats"], ex, ey, kw["dead_steps"])
    res = T.train(
        None,  # the SAE step is prebuilt (step_fn)
        opt,
        params,
        batch_fn,
        steps=cfg.steps,
        seed=cfg.seed,
        out_dir=out_dir,
        checkpoint_every=checkpoint_every,
        eval_fn=eval_fn,
        eval_every=eval_every,
        stop_after=stop_after,
        progress=progress,
        step_fn=step_fn,
        callbacks=callbacks,
    )
    p = res.state.params
    return TrainedSAE(p["sae"], p["stats"], res.history, res.evals)


# Compiled steps by (settings, site, ...): a second run with the same settings (a sweep
# over seeds or data, the retraining after ablation) reuses the compiled program.
_STEPS: dict = {}


def _cached_step(cfg: SAETrainConfig, kw: dict) -> tuple[optax.GradientTransformation, Callable]:
    key = (cfg.replace(seed=0), tuple(sorted(kw.items())))
    if key not in _STEPS:
        if len(_STEPS) >= 16:
            _STEPS.pop(next(iter(_STEPS)))
        opt = optimizer(cfg)
        _STEPS[key] = (opt, make_sae_step(cfg, opt, **kw))
    return _STEPS[key]


def _sharded(cfg, opt, params, mesh, draw, kw):
    from jax.sharding import NamedSharding, PartitionSpec

    from mechjax import sharding

    like = T.init_train_state(params, opt, jax.random.PRNGKey(0))
    shardings = sharding.state_shardings(like, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    step = make_sae_step(cfg, opt, out_shardings=(shardings, replicated), **kw)
    placed = {"done": False}

    def step_fn(state, batch):
        if not placed["done"]:
            state = jax.device_put(state, shardings)
            placed["done"] = True
        return step(state, batch)

    tables: dict[int, Any] = {}  # an in-memory store's table, replicated once

    def batch_fn(key, s):
        b = draw(s)
        if hasattr(b, "idx"):
            if id(b.x) not in tables:
                tables.clear()
                tables[id(b.x)] = jax.device_put((b.x, b.y), replicated)
            x, y = tables[id(b.x)]
            return b._replace(x=x, y=y, idx=sharding.shard_batch(np.asarray(b.idx), mesh))
        if hasattr(b, "tokens"):
            return b._replace(tokens=sharding.shard_batch(np.asarray(b.tokens), mesh))
        return type(b)(
            *(None if a is None else sharding.shard_batch(np.asarray(a), mesh) for a in b)
        )

    return step_fn, batch_fn


@jax.jit
def _eval_core(sae: SAE, stats: Stats, x: Array, y: Array | None, dead_steps: Array):
    from mechjax.sae.evaluation import reconstruction

    r = reconstruction(sae, x, y)
    return {
        "eval_mse": r.mse,
        "eval_fvu": r.fvu,
        "eval_l0": r.l0,
        "eval_cosine": r.cosine,
        "dead_frac": (stats.since_fired >= dead_steps).mean(),
        "dense_frac_ema": (stats.density > 0.1).mean(),
    }


def _eval_rows(sae, stats, x, y, dead_steps: int) -> dict:
    return _eval_core(sae, stats, x, y, jnp.asarray(dead_steps))
