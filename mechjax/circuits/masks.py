"""Learned edge masks: edge pruning with a hard-concrete (L0) relaxation, one mask per
sparsity target, all targets trained as one vmapped program.

Edge pruning (Bhaskar et al. 2024, "Finding Transformer Circuits with Edge Pruning";
MIB's mask-optimisation methods) learns a gate z(u -> v) in [0, 1] per edge: the edge
carries z * z_u + (1 - z) * a_u (a_u the ablated output, as in `evaluate_graph`). Each
gate is a hard concrete variable (Louizos et al. 2018, "Learning Sparse Neural Networks
through L0 Regularization") with location log_alpha:

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta),  u ~ U(0, 1)
    z = clip(s * (zeta - gamma) + gamma, 0, 1)
    P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))

The loss is the KL divergence from the clean run's next-token distribution to the masked
run's at the metric position (Bhaskar et al.'s objective) plus their Lagrangian sparsity
term l1 (density - target) + (l2 + lam) (density - target)^2, density = the mean of P(z != 0)
over the graph's edges, with the multipliers l1, l2 trained by gradient ascent (so the
density is pushed to the target rather than traded against the KL). `train_masks` stacks one
log_alpha per target and maps the whole step (sampling, forward, gradient, optax
update) over them, so a faithfulness curve's masks train as one compiled program; the
targets go through it `target_batch` at a time, vmapped (by default as many as about
`TARGET_BYTES` of working memory allows: one target of SmolLM2-135M or Gemma 3 270M
needs 1.1-1.6 GB, ten side by side did not fit a 24 GB machine).
A mask's ranking for circuit construction is its P(z != 0) (`keep_probability`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mechjax.circuits.evaluation import _check_ablation, _GraphHook, ablated_outputs
from mechjax.circuits.graph import _prepare, graph_of, post_attn_norm
from mechjax.errors import InputError
from mechjax.metrics import logits_at
from mechjax.model import Model
from mechjax.patching.blocks import _unembed

__all__ = ["MaskConfig", "MaskResult", "keep_probability", "train_masks"]


class MaskConfig(NamedTuple):
    """Training settings (Louizos et al.'s beta, gamma, zeta; an Adam learning rate)."""

    steps: int = 100
    lr: float = 0.1
    batch_size: int = 8
    lam: float = 100.0  # a fixed weight on (density - target)^2 besides the multipliers
    beta: float = 2 / 3
    gamma: float = -0.1
    zeta: float = 1.1
    init: float = 3.0  # the highest initial log_alpha (a target of 1: almost surely on)
    seed: int = 0
    target_batch: int | None = None  # targets vmapped side by side; None: by memory


class MaskResult(NamedTuple):
    log_alpha: jax.Array  # [n_targets, n_src, n_dst]
    density: np.ndarray  # [n_targets] expected fraction of edges on, at the end
    losses: np.ndarray  # [steps, n_targets] total loss per step
    targets: np.ndarray


TARGET_BYTES = 6 << 30  # about what the targets trained side by side may take


def target_batch(model: Model, tokens_shape, n_targets: int) -> int:
    """Targets per vmapped chunk of the step: one target's working memory is about 24
    copies of the sources' outputs ([batch, pos, n_src, d_model] float32) and two
    [d_vocab, d_model] matrices (fitted to XLA's memory analysis of the step on
    SmolLM2-135M, 1.1 GB, and Gemma 3 270M, 1.6 GB, at 4 prompts of 15 tokens)."""
    cfg = model.config
    n_src = graph_of(model).valid.shape[0]
    one = 4 * (
        24 * int(np.prod(tokens_shape)) * n_src * cfg.d_model + 2 * cfg.d_vocab * cfg.d_model
    )
    return int(max(1, min(n_targets, TARGET_BYTES // max(one, 1))))


def keep_probability(log_alpha, config: MaskConfig = MaskConfig()):
    """P(z != 0) of each gate: the mask's ranking of edges."""
    return jax.nn.sigmoid(log_alpha - config.beta * np.log(-config.gamma / config.zeta))


def _gates(log_alpha, key, cfg: MaskConfig):
    u = jax.random.uniform(key, log_alpha.shape, minval=1e-6, maxval=1 - 1e-6)
    s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / cfg.beta)
    return jnp.clip(s * (cfg.zeta - cfg.gamma) + cfg.gamma, 0.0, 1.0)


def train_masks(
    model: Model,
    clean,
    corrupted,
    targets: Sequence[float],
    *,
    positions=None,
    config: MaskConfig = MaskConfig(),
    ablation: str = "corrupted",
    attention_mask=None,
) -> MaskResult:
    """One edge mask per target density in `targets`, trained together (see module doc).

    `positions`: where the KL is read, one per row (default: the last position).
    """
    _check_ablation(ablation)
    t = np.asarray(targets, np.float32)
    if t.ndim != 1 or len(t) == 0 or np.any((t <= 0) | (t > 1)):
        raise InputError(f"targets must be densities in (0, 1], got {list(targets)}")
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    n = clean.shape[0]
    bs = min(config.batch_size, n)
    opt = optax.adam(config.lr)
    # every gate starts with P(z != 0) = its target (at most `init`): the density starts
    # where it has to end, and the KL moves the mass between edges
    p0 = np.clip(t, 1e-3, 0.999)
    start = np.minimum(
        config.init, np.log(p0 / (1 - p0)) + config.beta * np.log(-config.gamma / config.zeta)
    )
    log_alpha = jnp.asarray(
        np.broadcast_to(start[:, None, None], (len(t),) + graph.valid.shape), jnp.float32
    )
    params = (log_alpha, jnp.zeros(len(t)), jnp.zeros(len(t)))  # masks, multipliers
    state = jax.vmap(opt.init)(params)
    pos = None if positions is None else jnp.asarray(positions, jnp.int32)
    mask = None if attention_mask is None else jnp.asarray(attention_mask)
    key = jax.random.PRNGKey(config.seed)
    # the step is compiled for what it reads (lr, lam, the gate's constants): a new seed,
    # step count, batch size or init reuses it
    if config.target_batch is not None and config.target_batch < 1:
        raise InputError(f"target_batch must be >= 1 or None, got {config.target_batch}")
    chunk = config.target_batch or target_batch(model, (bs, clean.shape[1]), len(t))
    step_cfg = config._replace(steps=0, batch_size=0, init=0.0, seed=0, target_batch=chunk)
    losses = []
    for step in range(config.steps):
        k_rows, k_gate = jax.random.split(jax.random.fold_in(key, step))
        rows = jax.random.choice(k_rows, n, (bs,), replace=False) if bs < n else jnp.arange(n)
        params, state, loss = _step(
            model, clean[rows], corrupted[rows], None if mask is None else mask[rows],
            None if pos is None else pos[rows], params, state, jnp.asarray(t),
            jax.random.split(k_gate, len(t)), jnp.asarray(graph.valid),
            cfg=step_cfg, ablation=ablation,
        )  # fmt: skip
        losses.append(loss)
    log_alpha = params[0]
    density = np.asarray(_density(log_alpha, graph.valid, config))
    return MaskResult(log_alpha, density, np.asarray(jnp.stack(losses)), t)


def _density(log_alpha, valid, cfg):
    p = keep_probability(log_alpha, cfg)
    v = jnp.asarray(valid, p.dtype)
    return (p * v).sum((-2, -1)) / v.sum()


def _masked_logits(model, clean, ablated, gate, valid, mask):
    off = valid.astype(gate.dtype) * (1 - gate)
    hook = _GraphHook(model, ablated, off, None, post_attn_norm(model))
    return model.forward(clean, hook=hook, attention_mask=mask)


def _masked_logits_at(model, clean, ablated, gate, valid, mask, pos):
    """`logits_at(_masked_logits(...), pos)`, unembedding only the read position of each
    row: the forward's own full logits go unused and XLA drops them (a [batch, pos,
    d_vocab] matmul per target and step, most of the step on Gemma 3's 262k tokens)."""
    off = valid.astype(gate.dtype) * (1 - gate)
    hook = _GraphHook(model, ablated, off, None, post_attn_norm(model))
    model.forward(clean, hook=hook, attention_mask=mask)
    n = clean.shape[1]
    if pos is None:
        p = jnp.full(clean.shape[:1], n - 1, jnp.int32)
    else:
        p = jnp.broadcast_to(jnp.asarray(pos, jnp.int32), clean.shape[:1])
        p = jnp.where(p < 0, p + n, p)
    rows = p[:, None]
    assert hook.final is not None  # set when the logits' input ran
    final = jnp.take_along_axis(hook.final, rows[:, :, None], axis=1)
    tokens = jnp.take_along_axis(clean, rows, axis=1)
    m = None if mask is None else jnp.take_along_axis(mask, rows, axis=1)
    return _unembed(model, final, tokens, m)[:, 0]


@functools.partial(jax.jit, static_argnames=("cfg", "ablation"))
def _step(model, clean, corrupted, mask, pos, params, state, targets, keys, valid,
          *, cfg, ablation):  # fmt: skip
    # the optimiser is rebuilt from the (hashable) config here: a new optax object per
    # train_masks call as a static argument compiled the step again on every call
    opt = optax.adam(cfg.lr)
    ablated = jax.lax.stop_gradient(ablated_outputs(model, clean, corrupted, mask, ablation))
    ref = jax.nn.log_softmax(logits_at(model.forward(clean, attention_mask=mask), pos), -1)

    def loss_fn(p, target, key):
        la, l1, l2 = p
        gates = _gates(la, key, cfg)
        lp = jax.nn.log_softmax(
            _masked_logits_at(model, clean, ablated, gates, valid, mask, pos), -1
        )
        kl = jnp.sum(jnp.exp(ref) * (ref - lp), -1).mean()
        gap = _density(la, valid, cfg) - target
        return kl + l1 * gap + (l2 + cfg.lam) * gap**2

    def one(p, st, target, key):
        loss, (g_la, g1, g2) = jax.value_and_grad(loss_fn)(p, target, key)
        # descent on the masks, ascent on the multipliers
        upd, st = opt.update((g_la, -g1, -g2), st, p)
        return optax.apply_updates(p, upd), st, loss

    # `target_batch` targets vmapped side by side, the chunks one after another
    return jax.lax.map(lambda a: one(*a), (params, state, targets, keys),
                       batch_size=cfg.target_batch)  # fmt: skip
