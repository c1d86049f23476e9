"""The theory hook of the carry test: does a digit-level transformer trained from scratch
show the carry effect that pretrained LLMs do not?

Opedal, Stolfo et al. (ICML 2024) find that children are worse on additions and
subtractions with carries/borrows than on matched problems without, and that pretrained
LLMs are not. Here a small transformer learns 3-digit additions and subtractions from
scratch and is tested on the same carry pairs (`mechjax.evals.biases.carry_pairs`: the
operands of its problems, so a seed gives the very items the LLM evaluation uses): per
pair one problem without a carry/borrow (condition a) and one with k in {1, 2} carries
(condition b), with the same result and operation. Expected: a from-scratch digit-level
transformer will likely show a carry effect (acc_b < acc_a), which contrasts with the
pretrained-LLM result.

Tokens: the digits 0-9 (ids 0-9), "+" (10), "-" (11), "=" (12); a problem is the 12
tokens `xxx op yyy = rrrr`: both operands with 3 digits, the result with 4, zero-padded
(a difference has a leading 0), most significant digit first (not reversed: the order an
LLM reads and writes numbers in, which makes carries hard: the first result digit depends
on every column). Subtractions have x >= y.

Model: a toy transformer (`models/toy.py`: learned positions, pre-LayerNorm, GELU MLP of
4 d_model), trained with `mechjax.training.train` (AdamW, warmup then cosine decay,
gradient clipping) on random problems of both operations (an operand pair uniform over
the 3-digit numbers, each operation half of the time), cross-entropy on the 4 result
tokens only. Every test problem is excluded from training (additions in both orders).
Training sums reach 1998, while the carry pairs' sums stay below 1000 (`carry_pairs`
draws results up to 999), so their carries are in the units and tens columns.

Evaluation: greedy autoregressive decoding of the 4 result digits (each digit argmax over
the whole vocabulary given the model's own previous digits), exact match; the paired
tests of `mechjax.evals.bias_eval.paired_summary` overall, per operation and per number
of carries, at `n_evals` points along training and at the end; beside them the exact
match on problems drawn from the training distribution (`n_train_eval`, nearly all of
them unseen: the distribution holds 1.2M problems).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mechjax import training
from mechjax.evals.bias_eval import paired_summary
from mechjax.evals.biases import carry_pairs
from mechjax.models import toy

__all__ = [
    "SETTINGS",
    "CarryPairs",
    "decode_tokens",
    "encode",
    "model_config",
    "operand_pairs",
    "run",
    "training_tables",
]

Array = jax.Array

VOCAB = "0123456789+-="
PLUS, MINUS, EQUALS = 10, 11, 12
PROMPT_LEN = 8  # "xxx+yyy="
RESULT_LEN = 4
SEQ_LEN = PROMPT_LEN + RESULT_LEN
EVAL_CHUNK = 256  # rows per compiled evaluation call (inputs are padded to it)

_BASE = {
    "n_pairs": 500,
    "pairs_seed": 0,
    "steps": 1500,
    "n_evals": 6,
    "batch": 128,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "lr": 2e-3,
    "warmup": 100,
    "weight_decay": 0.01,
    "n_train_eval": 512,
    "seed": 0,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "full": _BASE,
    "quick": {**_BASE, "n_pairs": 300, "steps": 600, "n_evals": 4},
    "smoke": {  # seconds, for tests: numbers not meaningful
        **_BASE,
        "n_pairs": 16,
        "steps": 8,
        "n_evals": 2,
        "batch": 16,
        "d_model": 16,
        "n_layers": 1,
        "n_heads": 2,
        "warmup": 2,
        "n_train_eval": 32,
    },
}


# --------------------------------------------------------------------------- the task


def _digits(v: Array, n: int) -> Array:
    return (v[:, None] // 10 ** jnp.arange(n - 1, -1, -1)) % 10


def encode(x: Any, y: Any, minus: Any) -> Array:
    """Tokens int32 [n, 12] of `x + y = r` (`minus` False) or `x - y = r` (True)."""
    x, y = jnp.asarray(x, jnp.int32).reshape(-1), jnp.asarray(y, jnp.int32).reshape(-1)
    minus = jnp.asarray(minus, bool).reshape(-1)
    op = jnp.where(minus, MINUS, PLUS).astype(jnp.int32)[:, None]
    result = jnp.where(minus, x - y, x + y)
    eq = jnp.full_like(op, EQUALS)
    return jnp.concatenate([_digits(x, 3), op, _digits(y, 3), eq, _digits(result, 4)], axis=1)


def _number(digits: np.ndarray) -> np.ndarray:
    return (digits * 10 ** np.arange(digits.shape[1] - 1, -1, -1)).sum(1)


def decode_tokens(tokens: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, minus, result) of problems [n, 12]; the inverse of `encode`."""
    t = np.asarray(tokens)
    return _number(t[:, :3]), _number(t[:, 4:7]), t[:, 3] == MINUS, _number(t[:, PROMPT_LEN:])


class CarryPairs(NamedTuple):
    """Operands of the carry pairs: [n, 2] with column 0 condition a, column 1 b."""

    x: np.ndarray
    y: np.ndarray
    minus: np.ndarray  # bool [n]
    n_carries: np.ndarray  # int [n], the carries of b (a has none)

    def tokens(self) -> Array:
        """Problems [2n, 12]: every pair's a, then every pair's b."""
        m = np.concatenate([self.minus, self.minus])
        return encode(self.x.T.reshape(-1), self.y.T.reshape(-1), m)


def operand_pairs(n: int, seed: int = 0) -> CarryPairs:
    """The operands of `carry_pairs(n, seed)`: ops alternate, k cycles 1, 2 per op."""
    pairs = carry_pairs(n, seed)
    x = np.array([[p.a.operands[0], p.b.operands[0]] for p in pairs], np.int64)
    y = np.array([[p.a.operands[1], p.b.operands[1]] for p in pairs], np.int64)
    minus = np.array([p.info["op"] == "-" for p in pairs])
    n_carries = np.array([p.info["n_carries"] for p in pairs], np.int64)
    return CarryPairs(x, y, minus, n_carries)


def training_tables(pairs: CarryPairs) -> tuple[np.ndarray, np.ndarray]:
    """Training problems as codes 1000 x + y: (additions, subtractions with x >= y),
    every 3-digit operand pair but the test problems (additions also swapped)."""
    v = np.arange(100, 1000)
    code = (v[:, None] * 1000 + v[None, :]).reshape(-1)
    x, y = code // 1000, code % 1000
    held = pairs.x * 1000 + pairs.y
    plus_held = np.concatenate([held[~pairs.minus], (pairs.y * 1000 + pairs.x)[~pairs.minus]])
    plus = code[~np.isin(code, plus_held)]
    minus = code[(x >= y) & ~np.isin(code, held[pairs.minus])]
    return plus.astype(np.int32), minus.astype(np.int32)


@functools.partial(jax.jit, static_argnames="n")
def _sample(key: Array, plus: Array, minus: Array, n: int) -> Array:
    """`n` training problems [n, 12]: each operation half of the time, pairs uniform up to
    a modulo bias of 0.02% (one random-number kernel, fast to compile)."""
    bits = jax.random.bits(key, (2, n))
    is_minus = (bits[0] & 1).astype(bool)
    code = jnp.where(is_minus, minus[bits[1] % minus.shape[0]], plus[bits[1] % plus.shape[0]])
    return encode(code // 1000, code % 1000, is_minus)


# -------------------------------------------------------------------------- the model


def model_config(settings: dict) -> toy.ToyConfig:
    """The toy transformer of `settings` (input: a problem without its last token)."""
    d, h = settings["d_model"], settings["n_heads"]
    return toy.ToyConfig(
        n_layers=settings["n_layers"],
        d_model=d,
        n_heads=h,
        d_head=d // h,
        d_vocab=len(VOCAB),
        n_ctx=SEQ_LEN - 1,
        d_mlp=4 * d,
    )


def _result_nll(params: Any, tokens: Array, cfg: toy.ToyConfig) -> Array:
    """Per-problem mean cross-entropy of the result tokens under teacher forcing [n]."""
    logits = toy.forward(params, tokens[:, :-1], cfg)[:, PROMPT_LEN - 1 :]
    logp = jax.nn.log_softmax(logits)
    gold = tokens[:, PROMPT_LEN:]
    return -jnp.take_along_axis(logp, gold[..., None], axis=-1)[..., 0].mean(1)


def _greedy(params: Any, tokens: Array, cfg: toy.ToyConfig) -> Array:
    """Result tokens [n, 4] decoded greedily from the prompts of `tokens` [n, 12]: digit i
    is the argmax after the prompt and the model's own digits 0..i-1 (the slots not yet
    filled sit after the predicting position, so causal attention never sees them)."""

    def step(i, seq):
        logits = toy.forward(params, seq[:, :-1], cfg)
        at = jax.lax.dynamic_index_in_dim(logits, PROMPT_LEN - 1 + i, 1, keepdims=False)
        nxt = jnp.argmax(at, -1).astype(seq.dtype)
        return jax.lax.dynamic_update_index_in_dim(seq, nxt, PROMPT_LEN + i, 1)

    seq = jax.lax.fori_loop(0, RESULT_LEN, step, tokens.at[:, PROMPT_LEN:].set(0))
    return seq[:, PROMPT_LEN:]


def _optimizer(s: dict) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, s["lr"], s["warmup"], max(s["steps"], s["warmup"] + 1)
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=s["weight_decay"])
    )


class _Programs(NamedTuple):
    loss_fn: Callable
    optimizer: optax.GradientTransformation
    step: Callable  # `training.make_train_step(loss_fn, optimizer)`
    chunk: Callable  # `chunk(params, tokens [EVAL_CHUNK, 12]) -> (digit hits, result nll)`


@functools.lru_cache(maxsize=8)
def _programs(cfg: toy.ToyConfig, opt_items: tuple) -> _Programs:
    """The jitted programs of a model and optimizer settings, built once per process so
    that runs with the same settings share their compilations."""

    def loss_fn(params, tokens, key):
        del key
        return _result_nll(params, tokens, cfg).mean(), {}

    @jax.jit
    def chunk(params, tokens):
        hits = _greedy(params, tokens, cfg) == tokens[:, PROMPT_LEN:]
        return hits, _result_nll(params, tokens, cfg)

    optimizer = _optimizer(dict(opt_items))
    return _Programs(loss_fn, optimizer, training.make_train_step(loss_fn, optimizer), chunk)


def _evaluate(chunk: Callable, params: Any, tokens: Array) -> tuple[np.ndarray, np.ndarray]:
    """(greedy digit hits [n, 4] bool, teacher-forced result nll [n]) of problems [n, 12];
    a problem is solved when all 4 digits hit (exact match)."""
    n = tokens.shape[0]
    padded = jnp.pad(tokens, ((0, -n % EVAL_CHUNK), (0, 0)))
    outs = [chunk(params, padded[i : i + EVAL_CHUNK]) for i in range(0, n, EVAL_CHUNK)]
    hits, nll = (np.concatenate([np.asarray(o[j]) for o in outs])[:n] for j in (0, 1))
    return hits, nll


# ---------------------------------------------------------------------------- the run


def _summaries(correct: np.ndarray, pairs: CarryPairs) -> dict:
    """paired_summary overall, per operation and per number of carries (floats, ints)."""
    n = len(pairs.minus)
    a, b = correct[:n], correct[n:]

    def summary(sel: np.ndarray) -> dict:
        return {
            k: float(v) if k != "n" else int(v) for k, v in paired_summary(a[sel], b[sel]).items()
        }

    return {
        **summary(np.ones(n, bool)),
        "by_op": {"+": summary(~pairs.minus), "-": summary(pairs.minus)},
        "by_carries": {str(k): summary(pairs.n_carries == k) for k in (1, 2)},
    }


def _means(hits: np.ndarray) -> list[float]:
    return [float(v) for v in hits.mean(0)]


def run(settings: dict, log: Callable[[str], None] = print) -> dict:
    """Train the digit model of `settings` (missing keys: `SETTINGS["full"]`) and evaluate
    it on the carry pairs along training; deterministic for the settings.

    Returns (plain JSON types) the final `acc_a`, `acc_b`, `p_value` (paired t),
    `p_mcnemar`, `n`; the same per operation (`by_op` "+", "-") and per number of carries
    (`by_carries` "1", "2"); `digit_accuracy` {"a", "b"}: greedy accuracy of each result
    digit, most significant first; `curve`: {"step", "acc_a", "acc_b", "p_value",
    "p_mcnemar", "loss" (teacher-forced result cross-entropy on the pairs),
    "train_accuracy"} at step 0, every steps // n_evals updates and the end;
    `train_accuracy` and `train_digit_accuracy` on the training distribution;
    `final_train_loss` (mean of the last 100 steps); `settings`; `seconds` (wall time).
    """
    t0 = time.time()
    s = {**SETTINGS["full"], **settings}
    cfg = model_config(s)
    pairs = operand_pairs(s["n_pairs"], s["pairs_seed"])
    plus, minus = (jnp.asarray(t) for t in training_tables(pairs))
    test_tokens = pairs.tokens()
    train_tokens = _sample(jax.random.PRNGKey(10_000 + s["seed"]), plus, minus, s["n_train_eval"])
    opt_items = tuple((k, s[k]) for k in ("lr", "warmup", "steps", "weight_decay"))
    prog = _programs(cfg, opt_items)
    chunk = prog.chunk
    n = s["n_pairs"]

    def eval_fn(params) -> dict:
        hits, nll = _evaluate(chunk, params, test_tokens)
        correct = hits.all(1)
        row = {
            **{k: float(v) for k, v in paired_summary(correct[:n], correct[n:]).items()},
            "loss": float(nll.mean()),
            "train_accuracy": float(_evaluate(chunk, params, train_tokens)[0].all(1).mean()),
        }
        log(
            f"  eval: acc_a {row['acc_a']:.3f}, acc_b {row['acc_b']:.3f} (McNemar p "
            f"{row['p_mcnemar']:.3g}), test loss {row['loss']:.4f}, "
            f"train accuracy {row['train_accuracy']:.3f}"
        )
        return row

    init = toy.init(jax.random.fold_in(jax.random.PRNGKey(s["seed"]), 1), cfg)
    res = training.train(
        prog.loss_fn,
        prog.optimizer,
        init,
        lambda key, step: _sample(key, plus, minus, s["batch"]),
        steps=s["steps"],
        seed=s["seed"],
        eval_fn=eval_fn,
        eval_every=max(1, s["steps"] // s["n_evals"]),
        progress=False,
        step_fn=prog.step,
    )
    hits, _ = _evaluate(chunk, res.state.params, test_tokens)
    train_hits, _ = _evaluate(chunk, res.state.params, train_tokens)
    keys = ("step", "acc_a", "acc_b", "p_value", "p_mcnemar", "loss", "train_accuracy")
    return {
        **_summaries(hits.all(1), pairs),
        "digit_accuracy": {"a": _means(hits[:n]), "b": _means(hits[n:])},
        "curve": [{k: r[k] for k in keys} for r in res.evals],
        "train_accuracy": float(train_hits.all(1).mean()),
        "train_digit_accuracy": _means(train_hits),
        "final_train_loss": float(np.mean([r["loss"] for r in res.history[-100:]])),
        "settings": s,
        "seconds": round(time.time() - t0, 1),
    }
