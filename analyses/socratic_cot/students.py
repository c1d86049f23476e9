"""Students of the Socratic CoT study: training (`mechjax.training`) and the inference loops.

Every student is a Llama-config decoder (`models/llama.py`: RMSNorm, RoPE, SwiGLU) trained
from scratch with next-token cross-entropy on its format's target tokens only
(`data.encode_example`), AdamW with warmup and cosine decay, gradient clipping at 1.
Batches come from length buckets (each batch padded to its bucket's width, a multiple of
32, so a few compiled steps serve every student of a size, and short problems do not pay
for the longest);
batch `s` is a function of the seed and `s` alone, so a resumed run draws the same data.

Inference is greedy decoding with `mechjax.generation_batch.generate_ids` (the KV-cache
loop of `mj.generate` compiled, a fixed batch and bucketed prompt widths):

- answer-only, CoT, unified: one generation from `P <sep>` until `<eos>`; the answer is the
  number after the last "The answer is";
- the Socratic pair: loop { the decomposer writes q_j from `P <sep> q_1 <sep> .. q_{j-1}
  <sep>` until `<sep>`, or `<eos>` to stop; the solver writes s_j from `P <sep> q_1 <ans>
  s_1 <sep> .. q_j <ans>` until `<sep>` } for the rows still running, at most `max_steps`
  times; the answer is the value after "=" in the last solution (a_n, as in the paper).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mechjax import training
from mechjax.analyses.socratic_cot.data import Encoded, Vocab, join_words
from mechjax.evals.socratic import parse_answer
from mechjax.generation_batch import generate_ids
from mechjax.models import llama

__all__ = [
    "Prediction",
    "buckets",
    "model_config",
    "objective",
    "predict",
    "predict_pair",
    "train_student",
]

N_CTX = 512


def model_config(size: dict, d_vocab: int) -> llama.Config:
    """A Llama config of `size` ({"d_model", "n_layers", "n_heads"}); SwiGLU width 8/3 d."""
    d, h = size["d_model"], size["n_heads"]
    return llama.Config(
        d_model=d,
        n_layers=size["n_layers"],
        n_heads=h,
        n_kv_heads=h,
        d_head=d // h,
        d_mlp=int(8 * d / 3) // 8 * 8,
        d_vocab=d_vocab,
        n_ctx=N_CTX,
    )


def buckets(lengths: np.ndarray, multiple: int = 32) -> dict[int, np.ndarray]:
    """Row indices grouped by their length rounded up to a multiple of `multiple` (the
    width every batch of the group is padded to; the same widths for every format, so the
    students of one size share their compiled training steps)."""
    widths = (np.ceil(lengths / multiple) * multiple).astype(int)
    return {int(w): np.flatnonzero(widths == w) for w in np.unique(widths)}


def objective(cfg: llama.Config, settings: dict) -> tuple[Any, optax.GradientTransformation]:
    """(loss_fn, optimizer): cross-entropy on target tokens; AdamW, warmup, cosine decay."""
    s = settings
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, s["lr"], s["warmup"], max(s["steps"], s["warmup"] + 1), end_value=s["lr"] * 0.05
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=s["weight_decay"])
    )
    return _loss_fn(cfg), optimizer


def _loss_fn(cfg: llama.Config):
    def loss_fn(params, batch, key):
        tokens, mask = batch
        logits = llama.forward(params, tokens[:, :-1], cfg)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        w = mask[:, 1:]
        hit = (jnp.argmax(logits, -1) == tokens[:, 1:]) * w
        return (nll * w).sum() / w.sum(), {"token_accuracy": hit.sum() / w.sum()}

    return loss_fn


def train_student(
    enc: Encoded,
    cfg: llama.Config,
    settings: dict,
    *,
    seed: int,
    progress: bool,
    out_dir: Path | None = None,
    step_fn=None,
) -> tuple[Any, list]:
    """Train one student on `enc`; (params, loss curve [[step, loss, token accuracy]]).

    With `out_dir`, checkpoints go there (a quarter of the run apart) and a rerun resumes
    from the latest one (a finished student is loaded, not trained again). `step_fn`:
    `training.make_train_step(*objective(cfg, settings))`, shared by the students of a
    size so each batch width compiles once.
    """
    s = settings
    by_width = buckets(enc.lengths)
    widths = list(by_width)
    groups = [by_width[w] for w in widths]
    probs = np.asarray([len(g) for g in groups], np.float64)
    probs /= probs.sum()
    tokens = np.pad(enc.tokens, ((0, 0), (0, max(0, max(widths) - enc.tokens.shape[1]))))
    mask = np.pad(enc.mask, ((0, 0), (0, tokens.shape[1] - enc.mask.shape[1])))

    def batch_fn(key, step):
        rng = np.random.default_rng([seed, step])
        b = rng.choice(len(groups), p=probs)
        idx = rng.choice(groups[b], size=s["batch"], replace=True)
        w = widths[b]
        return jnp.asarray(tokens[idx, :w]), jnp.asarray(mask[idx, :w])

    loss_fn, optimizer = objective(cfg, s)
    init = llama.init(jax.random.PRNGKey(seed), cfg)
    res = training.train(
        loss_fn,
        optimizer,
        init,
        batch_fn,
        steps=s["steps"],
        seed=seed,
        progress=progress,
        out_dir=out_dir,
        checkpoint_every=max(1, s["steps"] // 4),
        max_to_keep=1,
        step_fn=step_fn,
    )
    history = res.history
    if out_dir is not None:  # the whole run's rows, those of earlier (killed) calls too
        lines = (Path(out_dir) / training.METRICS_FILE).read_text().splitlines()
        history = [json.loads(ln) for ln in lines if ln]
    every = max(1, len(history) // 100)
    curve = [
        [r["step"], round(r["loss"], 4), round(r["token_accuracy"], 4)] for r in history[::every]
    ]
    if history and curve[-1][0] != history[-1]["step"]:
        r = history[-1]
        curve.append([r["step"], round(r["loss"], 4), round(r["token_accuracy"], 4)])
    return res.state.params, curve


def _student(params, cfg: llama.Config):
    import mechjax as mj
    from mechjax.io.families import family_of_module

    return mj.Model(params, cfg, family_of_module("llama"))


def _until(ids: Sequence[int], stops: Sequence[int]) -> tuple[list[int], int | None]:
    """The ids before the first stop token, and that stop token (None if none)."""
    for i, t in enumerate(ids):
        if t in stops:
            return list(ids[:i]), t
    return list(ids), None


def _value(words: Sequence[str]) -> int | None:
    """The number after the last "=" of a solution."""
    text = join_words(words)
    if "=" not in text:
        return None
    tail = text.rsplit("=", 1)[1].split()
    return int(tail[0]) if tail and tail[0].isdigit() else None


class Prediction(NamedTuple):
    """A student's answer to one problem and what it wrote on the way."""

    answer: int | None
    output: str
    n_steps: int  # equations written (CoT, unified) or subquestions asked (pair)


def predict(
    params,
    cfg: llama.Config,
    vocab: Vocab,
    problems: Sequence[str],
    *,
    max_new: int,
    batch: int,
    bucket: int = 32,
) -> list[Prediction]:
    """Answer-only, CoT or unified student: one greedy generation per problem."""
    model = _student(params, cfg)
    prompts = [vocab.encode(p) + [vocab.sep] for p in problems]
    gen = generate_ids(model, prompts, max_new, batch=batch, bucket=bucket, stop_tokens=[vocab.eos])
    out = []
    for ids in gen:
        words = vocab.decode(_until(ids, [vocab.eos])[0])
        text = join_words(words)
        out.append(Prediction(parse_answer(text), text, words.count("=")))
    return out


def predict_pair(
    qg_params,
    qa_params,
    cfg: llama.Config,
    vocab: Vocab,
    problems: Sequence[str],
    *,
    max_steps: int,
    batch: int,
    bucket: int = 32,
    gold_questions: Sequence[Sequence[str]] | None = None,
) -> list[Prediction]:
    """The Socratic pair: the decomposer asks, the solver answers, until the decomposer
    stops (or `max_steps`). With `gold_questions` (per problem, the teacher's
    subquestions) they replace the decomposer's: the solver's accuracy alone."""
    qg, qa = _student(qg_params, cfg), _student(qa_params, cfg)
    base = [vocab.encode(p) + [vocab.sep] for p in problems]
    questions: list[list[list[int]]] = [[] for _ in problems]
    solutions: list[list[list[int]]] = [[] for _ in problems]
    running = list(range(len(problems)))
    room = N_CTX - bucket  # a prompt is padded up to `bucket` tokens more than its length
    for _ in range(max_steps):
        prompts = {i: base[i] + sum((q + [vocab.sep] for q in questions[i]), []) for i in running}
        running = [i for i in running if len(prompts[i]) + 32 <= room]  # no room: it stops
        if not running:
            break
        if gold_questions is None:
            asked = generate_ids(
                qg,
                [prompts[i] for i in running],
                32,
                batch=batch,
                bucket=bucket,
                stop_tokens=[vocab.sep, vocab.eos],
            )
        else:  # the teacher's next subquestion, or the stop marker after the last
            asked = [
                vocab.encode(gold_questions[i][len(questions[i])]) + [vocab.sep]
                if len(questions[i]) < len(gold_questions[i])
                else [vocab.eos]
                for i in running
            ]
        ask = []
        for i, ids in zip(running, asked):
            q, stop = _until(ids, [vocab.sep, vocab.eos])
            history = sum(
                (q_ + [vocab.ans] + s_ + [vocab.sep] for q_, s_ in zip(questions[i], solutions[i])),
                [],
            )
            prompt = base[i] + history + q + [vocab.ans]
            if q and len(prompt) + 12 <= room:
                questions[i].append(q)
                ask.append((i, prompt, stop != vocab.eos))
        if not ask:
            break
        solved = generate_ids(
            qa, [p for _, p, _ in ask], 12, batch=batch, bucket=bucket, stop_tokens=[vocab.sep]
        )
        for (i, _, _), ids in zip(ask, solved):
            solutions[i].append(_until(ids, [vocab.sep])[0])
        running = [i for i, _, more in ask if more]
    out = []
    for qs, ss in zip(questions, solutions):
        pairs = [
            f"Q: {join_words(vocab.decode(q))} A: {join_words(vocab.decode(s))}"
            for q, s in zip(qs, ss)
        ]
        value = _value(vocab.decode(ss[-1])) if ss else None
        out.append(Prediction(value, " | ".join(pairs), len(qs)))
    return out
