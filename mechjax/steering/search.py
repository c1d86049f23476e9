"""Steered generation of many candidates at once, the degeneracy filter and layer search.

A *candidate* is a list of `Steer`s (empty: no steering), e.g. "adjust_rs at layer 12"
or "adjust_rs at 12 plus add_vector at 20". `generate_candidates` generates every
(candidate, prompt) row in one compiled loop: each candidate's vectors become per-row
values of one `AdjustRS` / `AddVector` per layer site, gated to 0 on the rows of other
candidates, so the whole sweep (layers x coefficients x prompts) is one program whose
values are arrays, and a new sweep of the same shape does not recompile.

`search_layer` is the paper's layer search (Stolfo et al. 2025, `find_best_layer.py`):
candidate layers `range(n_layers // 5, n_layers, 2)` and "no steering", validation
queries without the instruction, score = the fraction following the instruction
(IFEval strict), a layer scored 0 if any of its outputs is degenerate (perplexity under
the unsteered model below `ppl_threshold`: repetitive text), then the argmax. The paper
measures perplexity with GPT-2; offline we use the unsteered model itself, conditioned
on the prompt, so the threshold is the paper's number on a different scale.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.errors import InputError
from mechjax.generation import Generation, generate
from mechjax.model import Model, run
from mechjax.steering import ifeval
from mechjax.steering.vectors import (
    AddVector,
    AdjustRS,
    SteeringVectors,
    answer_text,
    check_layers,
    encode_prompts,
)

__all__ = [
    "Candidate",
    "LayerSearch",
    "Steer",
    "candidate_hooks",
    "default_layers",
    "generate_candidates",
    "is_degenerate",
    "perplexity",
    "score",
    "search_layer",
]

MODES = ("adjust", "add")

# Degenerate (repetitive) text: perplexity under the unsteered model below this. The
# paper's 2.5 is GPT-2's perplexity of another model's text, where fluent text scores
# tens; a model's own greedy text scored by itself is far more predictable (SmolLM2's
# unsteered greedy answers score 1.6-3.9), so 2.5 would discard the baseline itself.
# 1.3 keeps only near-deterministic loops ("the the the ...") out.
PPL_THRESHOLD = 1.3


def is_degenerate(ppl: np.ndarray, threshold: float = PPL_THRESHOLD) -> np.ndarray:
    """True where a perplexity is below `threshold` (NaN, an empty text, is not)."""
    return np.asarray(np.nan_to_num(np.asarray(ppl, float), nan=np.inf) < threshold)


class Steer(NamedTuple):
    """One steering vector: at `resid_post` of `layer`, `adjust` sets the projection on
    `direction` to `coeff`; `add` adds `coeff` times the unit direction."""

    layer: int
    direction: np.ndarray
    coeff: float
    mode: str = "adjust"


Candidate = Sequence[Steer]


def adjust_at(vectors: SteeringVectors, layer: int) -> Steer:
    """The paper's format steering at `layer`: adjust_rs to the mean projection."""
    u, c = vectors.at(layer)
    return Steer(layer, u, c, "adjust")


def add_at(vectors: SteeringVectors, layer: int, weight: float) -> Steer:
    """add_vector of `weight` along `layer`'s unit direction."""
    u, _ = vectors.at(layer)
    return Steer(layer, u, float(weight), "add")


def default_layers(n_layers: int, step: int = 2) -> tuple[int, ...]:
    """The paper's candidate layers: range(n_layers // 5, n_layers, step)."""
    return tuple(range(n_layers // 5, n_layers, step))


def candidate_hooks(model: Model, rows: Sequence[Candidate]) -> dict:
    """Hooks steering row i of a batch by `rows[i]` (interventions with per-row values)."""
    n_layers, d = model.config.n_layers, model.config.d_model
    by_site: dict[int, dict[str, list]] = {}
    for r, cand in enumerate(rows):
        for s in cand:
            if s.mode not in MODES:
                raise InputError(f"steering mode {s.mode!r}; valid: {', '.join(MODES)}")
            if not 0 <= int(s.layer) < n_layers:
                raise InputError(
                    f"steering layer {s.layer} out of range; the model has layers 0..{n_layers - 1}"
                )
            u = np.asarray(s.direction, np.float32)
            if u.shape != (d,):
                raise InputError(
                    f"steering direction for layer {s.layer} has shape {u.shape}, expected ({d},)"
                )
            norm = float(np.linalg.norm(u))
            if norm == 0 or not np.isfinite(norm):
                raise InputError(f"steering direction for layer {s.layer} is zero or not finite")
            by_site.setdefault(int(s.layer), {"adjust": [], "add": []})[s.mode].append(
                (r, u / norm, float(s.coeff))
            )
    n = len(rows)
    hooks: dict = {}
    for layer in sorted(by_site):
        ivs = []
        for mode in MODES:
            entries = by_site[layer][mode]
            if not entries:
                continue
            if len({r for r, _, _ in entries}) != len(entries):
                raise InputError(
                    f"a candidate has two {mode!r} vectors at layer {layer}; sum them into one"
                )
            u = np.zeros((n, d), np.float32)
            coeff = np.zeros(n, np.float32)
            gate = np.zeros(n, np.float32)
            for r, ur, c in entries:
                u[r], coeff[r], gate[r] = ur, c, 1.0
            if mode == "adjust":
                ivs.append(AdjustRS(jnp.asarray(u), jnp.asarray(coeff), jnp.asarray(gate)))
            else:
                ivs.append(AddVector(jnp.asarray(u), jnp.asarray(coeff * gate)))
        hooks[f"blocks.{layer}.hook_resid_post"] = tuple(ivs)
    return hooks


def _width(rows: Sequence[Sequence[int]], multiple: int = 32) -> int:
    longest = max(len(r) for r in rows)
    return -(-longest // multiple) * multiple


def generate_candidates(
    model: Model,
    prompts: Sequence[Sequence[int]],
    steers: Sequence[Candidate],
    max_new_tokens: int,
    *,
    batch_size: int = 64,
    pad_multiple: int = 32,
    **kwargs,
) -> Generation:
    """Generate row i from token ids `prompts[i]` steered by `steers[i]`, in chunks of
    `batch_size` rows, every chunk padded to the same shape (one compiled program).

    Greedy unless `temperature`/`key` are passed in `kwargs` (forwarded to `generate`).
    Returns one `Generation` over all rows, in order.
    """
    if len(prompts) != len(steers):
        raise InputError(f"{len(prompts)} prompts but {len(steers)} steering rows")
    if not prompts:
        raise InputError("generate_candidates needs at least one row")
    width = _width(prompts, pad_multiple)
    # rows per call: the fewest calls of at most batch_size rows, balanced and rounded
    # up to a multiple of 8, so calls of different sizes share a few compiled programs
    n_calls = math.ceil(len(prompts) / batch_size)
    size = min(batch_size, 8 * math.ceil(math.ceil(len(prompts) / n_calls) / 8))
    outs = []
    for start in range(0, len(prompts), size):
        p = [list(r) for r in prompts[start : start + size]]
        s = list(steers[start : start + size])
        real = len(p)
        p += [p[0]] * (size - real)  # pad the last chunk: same shape, same program
        s += [s[0]] * (size - real)
        g = generate(
            model,
            p,
            max_new_tokens,
            hooks=candidate_hooks(model, s),
            prompt_width=width,
            progress=False,
            **kwargs,
        )
        outs.append((g, real))
    cat = lambda f: np.concatenate([getattr(g, f)[:real] for g, real in outs])  # noqa: E731
    texts = None
    if outs[0][0].texts is not None:
        texts = [t for g, real in outs for t in (g.texts or [])[:real]]
    return Generation(cat("tokens"), cat("lengths"), texts, cat("prompt"), cat("prompt_mask"))


@jax.jit
def _nll(model: Model, tokens, mask):
    logits = run(model, tokens, attention_mask=mask, jit=False).logits[:, :-1]
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(lp, tokens[:, 1:, None], axis=-1)[..., 0]


def perplexity(
    model: Model, gen: Generation, *, rows: Sequence[int] | None = None, batch_size: int = 8
) -> np.ndarray:
    """Perplexity of each row's generated tokens (stop token excluded) under the
    unsteered model, given its prompt: exp(mean NLL). NaN for an empty generation, and
    for rows left out of `rows` (default: every row)."""
    if rows is not None:
        idx = np.asarray(rows, np.int64)
        full = np.full(len(gen.lengths), np.nan)
        if idx.size:
            sub = Generation(
                gen.tokens[idx], gen.lengths[idx], None, gen.prompt[idx], gen.prompt_mask[idx]
            )
            full[idx] = perplexity(model, sub, batch_size=batch_size)
        return full
    prompt, pmask, toks, lengths = gen.prompt, gen.prompt_mask, gen.tokens, gen.lengths
    n, width = prompt.shape
    max_new = toks.shape[1]
    stop_mask = np.arange(max_new)[None, :] < lengths[:, None]
    stops = set()
    if model.tokenizer is not None and model.tokenizer.eos_token_id is not None:
        stops.add(int(model.tokenizer.eos_token_id))
    is_stop = np.isin(toks, list(stops)) if stops else np.zeros_like(stop_mask)
    gen_mask = stop_mask & ~is_stop
    seq = np.concatenate([prompt, toks], axis=1).astype(np.int32)
    mask = np.concatenate([pmask, gen_mask], axis=1)
    target = np.concatenate([np.zeros_like(pmask), gen_mask], axis=1)[:, 1:]
    size = min(batch_size, n)
    out = np.full(n, np.nan)
    for start in range(0, n, size):
        sl = slice(start, start + size)
        b_seq, b_mask, b_t = seq[sl], mask[sl], target[sl]
        real = b_seq.shape[0]
        if real < size:
            pad = size - real
            b_seq = np.concatenate([b_seq, np.repeat(b_seq[:1], pad, 0)])
            b_mask = np.concatenate([b_mask, np.repeat(b_mask[:1], pad, 0)])
            b_t = np.concatenate([b_t, np.repeat(b_t[:1], pad, 0)])
        nll = np.asarray(_nll(model, jnp.asarray(b_seq), jnp.asarray(b_mask)))[:real]
        cnt = b_t[:real].sum(1)
        tot = (nll * b_t[:real]).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sl] = np.where(cnt > 0, np.exp(tot / np.maximum(cnt, 1)), np.nan)
    return out


def score(
    texts: Sequence[str],
    instruction_ids: Sequence[Sequence[str]],
    kwargs: Sequence[Sequence[dict]] | None = None,
    *,
    loose: bool = False,
) -> np.ndarray:
    """follow_all_instructions of each text (bool [n]), IFEval strict unless `loose`."""
    kws: list = list(kwargs) if kwargs is not None else [None] * len(texts)
    if not len(texts) == len(instruction_ids) == len(kws):
        raise InputError(
            f"{len(texts)} texts, {len(instruction_ids)} instruction lists, {len(kws)} kwargs"
        )
    return np.array(
        [
            ifeval.follow_all(ids, t, list(kw) if kw is not None else None, loose=loose)
            for t, ids, kw in zip(texts, instruction_ids, kws)
        ],
        bool,
    )


class LayerSearch(NamedTuple):
    """The layer (and weight) search of one instruction.

    Attributes:
      candidates: the candidate layers, None for "no steering" (first); with several
        `weights` a layer appears once per weight.
      coeffs: [n_cand] each candidate's coefficient: the `adjust_rs` target c_l, or the
        `add_vector` weight (None for no steering).
      accuracy: [n_cand] fraction of validation outputs following the instruction.
      degenerate: [n_cand] True if any output's perplexity is below the threshold (never
        for "no steering", the reference).
      score: [n_cand] accuracy, 0 where degenerate.
      best: the chosen layer (None: no steering won); `best_coeff` its coefficient.
      texts: [n_cand][n_prompts] the outputs.
      perplexity: [n_cand, n_prompts]: computed for the steered candidates with a
        non-zero accuracy (the filter cannot change the others' score of 0), NaN else.
      mode: "adjust" or "add".
    """

    candidates: tuple[int | None, ...]
    coeffs: tuple[float | None, ...]
    accuracy: np.ndarray
    degenerate: np.ndarray
    score: np.ndarray
    best: int | None
    best_coeff: float | None
    texts: list[list[str]]
    perplexity: np.ndarray
    mode: str = "adjust"

    def steer(self, vectors: SteeringVectors) -> list[Steer]:
        """The chosen candidate as a steering list ([] when no steering won)."""
        if self.best is None or self.best_coeff is None:
            return []
        u, _ = vectors.at(self.best)
        return [Steer(self.best, u, self.best_coeff, self.mode)]


def search_layer(
    model: Model,
    vectors: SteeringVectors,
    queries: Sequence[str],
    instruction_ids: Sequence[Sequence[str]],
    kwargs: Sequence[Sequence[dict]] | None = None,
    *,
    layers: Sequence[int] | None = None,
    mode: str = "adjust",
    weights: Sequence[float] | None = None,
    relative: bool = True,
    max_new_tokens: int = 64,
    template: str = "auto",
    ppl_threshold: float = PPL_THRESHOLD,
    batch_size: int = 64,
    extra: Candidate = (),
) -> LayerSearch:
    """Choose the steering layer for an instruction on validation `queries` (without
    the instruction): every candidate layer (x weight) and "no steering" generated in
    one compiled loop, each row carrying its own steering values.

    `mode="adjust"` (the paper's format steering) sets the projection to c_l;
    `mode="add"` adds each of `weights` (times |u_l| when `relative`) along u_l, so
    layers x weights are searched together. `extra` steers every candidate (no-steering
    included) in addition, e.g. a vector already chosen for another instruction when
    searching for a composition.
    """
    if len(queries) != len(instruction_ids):
        raise InputError(f"{len(queries)} queries but {len(instruction_ids)} instruction lists")
    if kwargs is not None and len(kwargs) != len(queries):
        raise InputError(f"{len(queries)} queries but {len(kwargs)} kwargs lists")
    if mode not in MODES:
        raise InputError(f"steering mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "add" and not weights:
        raise InputError("mode='add' needs weights=[...] to search over")
    if mode == "adjust" and weights is not None:
        raise InputError("weights= apply to mode='add'; adjust_rs uses each layer's c_l")
    for ids in instruction_ids:
        ifeval.require_checkable(ids)
    cand_layers = (
        default_layers(model.config.n_layers) if layers is None else check_layers(model, layers)
    )
    for layer in cand_layers:
        vectors.index(layer)
    cands: list[tuple[int | None, float | None]] = [(None, None)]
    for layer in cand_layers:
        if mode == "adjust":
            cands.append((layer, vectors.at(layer)[1]))
        else:
            scale = float(vectors.norm[vectors.index(layer)]) if relative else 1.0
            cands += [(layer, float(w) * scale) for w in weights or ()]
    rows = encode_prompts(model, queries, template)
    n = len(rows)
    prompts, steers = [], []
    for layer, coeff in cands:
        cand = list(extra)
        if layer is not None and coeff is not None:
            cand.append(Steer(layer, vectors.at(layer)[0], coeff, mode))
        prompts += rows
        steers += [cand] * n
    gen = generate_candidates(model, prompts, steers, max_new_tokens, batch_size=batch_size)
    assert gen.texts is not None
    k = len(cands)
    kw_rows = None if kwargs is None else list(kwargs) * k
    answers = [answer_text(t, model, template) for t in gen.texts]
    ok = score(answers, list(instruction_ids) * k, kw_rows)
    acc = ok.reshape(k, n).mean(1)
    # the filter can only change the argmax for steered candidates that score above 0:
    # only their outputs are scored by the (unsteered) model; the others' stay NaN
    need = [c * n + i for c in range(1, k) if acc[c] > 0 for i in range(n)]
    ppl = perplexity(model, gen, rows=need).reshape(k, n)
    degenerate = np.asarray(is_degenerate(ppl, ppl_threshold).any(1))
    degenerate[0] = False  # the unsteered model is the reference, never filtered out
    sc = np.where(degenerate, 0.0, acc)
    best, best_coeff = cands[int(np.argmax(sc))]
    texts = [gen.texts[i * n : (i + 1) * n] for i in range(k)]
    return LayerSearch(
        tuple(c[0] for c in cands),
        tuple(c[1] for c in cands),
        acc,
        degenerate,
        sc,
        best,
        best_coeff,
        texts,
        ppl,
        mode,
    )
