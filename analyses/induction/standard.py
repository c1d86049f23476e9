"""The standard two-layer attention-only transformer trained with cross-entropy: the
rotated induction task, progress measures (Eqs. 20-22) and induction-head scores."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mechjax import training
from mechjax.hooks import HookContext
from mechjax.models import toy

Array = jax.Array
Params = dict[str, Any]  # nested: blocks are a list of dicts


# =============================================================== the standard transformer


@dataclasses.dataclass(frozen=True)
class StandardSetup:
    """The standard two-layer attention-only transformer and its induction task."""

    half: int = 8  # L: sequences are r_1..r_L then a rotation of them
    d_vocab: int = 32
    d_model: int = 32
    n_heads: int = 1
    batch: int = 32
    lr: float = 3e-3
    steps: int = 600
    checkpoint_every: int = 20
    init_range: float = 0.1
    seed: int = 0

    def config(self) -> toy.ToyConfig:
        return toy.ToyConfig(
            n_layers=2,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads,
            d_vocab=self.d_vocab,
            n_ctx=2 * self.half,
            d_mlp=None,
            normalization=None,
            init_range=self.init_range,
        )


def induction_batch(key: Array, batch: int, half: int, d_vocab: int) -> tuple[Array, Array]:
    """Repeated random tokens with a random rotation: `r_1..r_L` then `r_{k+1}..r_L r_1..r_k`.

    The rotation k varies per sequence, so the distance to the previous occurrence is not
    fixed and a purely positional head cannot do the task. Returns tokens [batch, 2L] and
    `source` [batch, L-1]: for the query at position L+i, the position right after the
    previous occurrence of its token (the token to copy), or -1 where the second half
    wraps around and induction does not predict the next token.
    """
    k_tok, k_rot = jax.random.split(key)
    r = jax.random.randint(k_tok, (batch, half), 0, d_vocab)
    idx = (jax.random.randint(k_rot, (batch, 1), 0, half) + jnp.arange(half)) % half
    tokens = jnp.concatenate([r, jnp.take_along_axis(r, idx, 1)], 1)
    source = jnp.where(idx[:, :-1] < half - 1, idx[:, :-1] + 1, -1)
    return tokens, source


def induction_loss(params: Params, batch: tuple[Array, Array], cfg: toy.ToyConfig):
    """Cross-entropy and accuracy where induction predicts the next token (second half)."""
    return _masked_ce(toy.forward(params, batch[0], cfg), batch)


def progress_measures(params: Params) -> dict[str, Array]:
    """The paper's Eqs. 20-22 for a two-layer transformer (TransformerLens row convention).

    alpha_3 [h1] = sum_i (p_{i-1} W_K^1)(p_i W_Q^1)^T over positions (previous-token QK);
    beta_2 [h1, h2] = sum_t (t W_V^1 W_O^1 W_K^2)(t W_Q^2)^T over token embeddings
    (K-composition matching a token with the token layer 1 moved); gamma_3 [h2] =
    tr(W_E W_V^2 W_O^2 W_U) (copying). h1, h2 index heads of layers 0 and 1.
    """
    P, E, U = params["pos_embed"]["W_pos"], params["embed"]["W_E"], params["unembed"]["W_U"]
    a0, a1 = params["blocks"][0]["attn"], params["blocks"][1]["attn"]
    alpha = jnp.einsum(
        "ihd,ihd->h",
        jnp.einsum("im,hmd->ihd", P[:-1], a0["W_K"]),
        jnp.einsum("im,hmd->ihd", P[1:], a0["W_Q"]),
    )
    ov1 = jnp.einsum("tm,hmd,hdn->htn", E, a0["W_V"], a0["W_O"])  # [h1, vocab, d_model]
    key = jnp.einsum("atn,gnd->agtd", ov1, a1["W_K"])
    query = jnp.einsum("tm,gmd->gtd", E, a1["W_Q"])
    beta = jnp.einsum("agtd,gtd->ag", key, query)
    gamma = jnp.einsum("tm,gmd,gdn,nt->g", E, a1["W_V"], a1["W_O"], U)
    return {"alpha_3": alpha, "beta_2": beta, "gamma_3": gamma}


def _patterns(params: Params, tokens: Array, cfg: toy.ToyConfig) -> tuple[Array, Array, Array]:
    """(logits, layer-0 pattern, layer-1 pattern) of one forward pass."""
    sites = ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    ctx = HookContext({}, capture=sites)
    logits = toy.forward(params, tokens, cfg, hook=ctx)
    return logits, ctx.cache[sites[0]], ctx.cache[sites[1]]


def induction_score(pattern1: Array, source: Array) -> Array:
    """Mean attention of each layer-1 head from a repeated token to the token after its
    previous occurrence [n_heads]; `pattern1` [batch, head, q, k] of layer 1."""
    half = pattern1.shape[-1] // 2
    att = jnp.take_along_axis(
        pattern1[:, :, half:-1], jnp.maximum(source, 0)[:, None, :, None], -1
    )[..., 0]
    w = (source >= 0).astype(jnp.float32)[:, None]
    return jnp.sum(att * w, (0, 2)) / jnp.sum(w, (0, 2))


def previous_token_score(pattern0: Array) -> Array:
    """Mean attention of each layer-0 head from position i to i-1 [n_heads]."""
    q = jnp.arange(1, pattern0.shape[-1])
    return pattern0[:, :, q, q - 1].mean(axis=(0, 2))


def _masked_ce(logits: Array, batch: tuple[Array, Array]) -> tuple[Array, Array]:
    tokens, source = batch
    half = tokens.shape[1] // 2
    logits, target = logits[:, half:-1], tokens[:, half + 1 :]
    w = (source >= 0).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
    acc = (jnp.argmax(logits, -1) == target).astype(jnp.float32)
    return jnp.sum(nll * w) / jnp.sum(w), jnp.sum(acc * w) / jnp.sum(w)


def train_standard(setup: StandardSetup, out_dir: Path, *, progress: bool = False) -> dict:
    """Train with `mechjax.training` (checkpoints every k steps) and measure over checkpoints."""
    cfg = setup.config()
    params = toy.init(jax.random.PRNGKey(setup.seed), cfg)
    batch_fn = jax.jit(lambda key: induction_batch(key, setup.batch, setup.half, setup.d_vocab))

    def loss_fn(p, batch, key):
        loss, acc = induction_loss(p, batch, cfg)
        return loss, {"accuracy": acc}

    if (out_dir / "checkpoints").exists():  # this function's own output folder: start afresh
        shutil.rmtree(out_dir / "checkpoints")
    t0 = time.time()
    training.train(
        loss_fn,
        optax.adam(setup.lr),
        params,
        lambda key, step: batch_fn(key),
        steps=setup.steps,
        seed=setup.seed,
        out_dir=out_dir,
        checkpoint_every=setup.checkpoint_every,
        progress=progress,
        resume=False,
    )
    train_seconds = time.time() - t0
    steps, stack = training.load_checkpoint_stack(out_dir, like=params)
    # the step-0 weights join the stack so every curve starts at initialisation
    stack = jax.tree_util.tree_map(lambda s, p: jnp.concatenate([p[None], s]), stack, params)
    steps = np.concatenate([[0], steps])
    eval_batch = induction_batch(
        jax.random.PRNGKey(10_000 + setup.seed), 256, setup.half, setup.d_vocab
    )

    def measure(p, batch):
        logits, pattern0, pattern1 = _patterns(p, batch[0], cfg)
        loss, acc = _masked_ce(logits, batch)
        return {
            "loss": loss,
            "accuracy": acc,
            "induction_score": induction_score(pattern1, batch[1]),
            "previous_token_score": previous_token_score(pattern0),
            **progress_measures(p),
        }

    over_checkpoints = jax.jit(lambda s, b: training.map_over_checkpoints(measure, s, b))
    m = jax.device_get(over_checkpoints(stack, eval_batch))
    h2 = int(np.argmax(m["induction_score"][-1]))
    h1 = int(np.argmax(m["previous_token_score"][-1]))
    curves = {
        "step": steps.tolist(),
        "loss": m["loss"].tolist(),
        "accuracy": m["accuracy"].tolist(),
        "induction_score": m["induction_score"][:, h2].tolist(),
        "previous_token_score": m["previous_token_score"][:, h1].tolist(),
        "alpha_3": m["alpha_3"][:, h1].tolist(),
        "beta_2": m["beta_2"][:, h1, h2].tolist(),
        "gamma_3": m["gamma_3"][:, h2].tolist(),
    }
    loss = np.asarray(curves["loss"])
    t_drop = _first(loss < 0.5 * loss[0], steps)
    onsets = {
        k: _first(_reached(np.asarray(curves[k]), 0.1), steps)
        for k in ("gamma_3", "beta_2", "alpha_3")
    }
    return {
        "setup": dataclasses.asdict(setup),
        "heads": {"layer0": h1, "layer1": h2},
        "curves": curves,
        "t_loss_drop": t_drop,
        "onsets": onsets,
        "train_seconds": train_seconds,
        "checkpoints": len(steps) - 1,
    }


def _reached(x: np.ndarray, fraction: float) -> np.ndarray:
    """Where x - x_0 has covered `fraction` of its final change, in that change's direction."""
    total = x[-1] - x[0]
    if total == 0:
        return np.zeros_like(x, bool)
    return (x - x[0]) / total >= fraction


def _first(mask: np.ndarray, steps: np.ndarray) -> float:
    return float(steps[np.argmax(mask)]) if mask.any() else float("nan")
