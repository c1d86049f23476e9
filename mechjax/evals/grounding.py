"""Per-sentence grounding of generated text in source documents, judged by a sentence
encoder (Stolfo 2024, "Groundedness in Retrieval-augmented Long-form Generation", with a
MiniLM similarity judge in place of the paper's 11B NLI model).

    encode = SentenceEncoder(mj.load("minilm-l6"))
    cal = calibrate(support(encode(claims), encode(sources)), labels)   # a threshold
    rows = judge(answer_text, documents, encode, cal.threshold)       # per sentence

- `SentenceEncoder`: Sentence-BERT embeddings (mean pooling, L2 norm: the output of
  all-MiniLM-L6-v2) of many texts in fixed-size compiled batches, widths rounded up to a
  bucket, so a run over thousands of sentences compiles a handful of programs; texts
  longer than `max_tokens` are cut (sentence-transformers cuts this model at 256).
- `support`: each claim's largest cosine similarity to any source sentence.
- `calibrate`: the threshold on support that maximises balanced accuracy on labelled
  (claim, sources) pairs; `accuracy` scores a threshold on other pairs.
- `judge`: split an answer into sentences (`steering.ifeval.split_sentences`) and mark
  each grounded when its support reaches the threshold.

A similarity judge sees topic and wording, not truth: a sentence that restates a source
sentence with one number changed stays close to it. Calibrating on pairs with such swaps
(`accuracy` per kind of negative) says how much that costs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np
from jaxtyping import Bool, Float

from mechjax.errors import InputError
from mechjax.steering.ifeval import split_sentences


@functools.partial(jax.jit, static_argnums=(0, 1))
def _embed(family_module, cfg, params, tokens, mask):
    return family_module.sentence_embedding(params, tokens, cfg, attention_mask=mask)


class SentenceEncoder:
    """Unit-norm sentence embeddings [n, d_model] of texts, from an encoder model whose
    family has `sentence_embedding` (BERT: all-MiniLM-L6-v2).

    Args:
      model: the loaded encoder (`mj.load("minilm-l6")`).
      batch: rows per compiled call (the last call padded with empty rows).
      bucket: token widths are rounded up to a multiple of this.
      max_tokens: longer texts keep their first max_tokens - 1 tokens and [SEP].
    """

    def __init__(self, model, *, batch: int = 64, bucket: int = 32, max_tokens: int = 256):
        import importlib

        self.module = importlib.import_module(f"mechjax.models.{model.family.name}")
        if not hasattr(self.module, "sentence_embedding"):
            raise InputError(
                f"{model.family.name} has no sentence_embedding; a sentence encoder needs an "
                "encoder family such as bert (minilm-l6)"
            )
        if model.tokenizer is None:
            raise InputError("the sentence encoder needs the model's tokenizer")
        self.model, self.batch, self.bucket, self.max_tokens = model, batch, bucket, max_tokens
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings [len(texts), d_model] (float32, unit norm); repeated texts are
        embedded once per encoder."""
        texts = list(texts)
        new = sorted({t for t in texts if t not in self._cache})
        for s in range(0, len(new), self.batch):
            part = new[s : s + self.batch]
            for t, e in zip(part, self._run(part)):
                self._cache[t] = e
        d = self.model.config.d_model
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, d), np.float32)

    def _run(self, texts: list[str]) -> np.ndarray:
        tok = self.model.tokenizer
        enc = tok.encode_batch(texts)
        lengths = np.minimum(enc.lengths, self.max_tokens)
        width = -(-int(lengths.max()) // self.bucket) * self.bucket
        tokens = np.zeros((self.batch, width), np.int32)
        mask = np.zeros((self.batch, width), bool)
        for i, n in enumerate(lengths):
            row = enc.tokens[i, :n].copy()
            if enc.lengths[i] > n:  # cut: keep the closing special ([SEP]) last
                row[-1] = enc.tokens[i, enc.lengths[i] - 1]
            tokens[i, :n], mask[i, :n] = row, True
        mask[len(texts) :, 0] = True  # padding rows: one token, discarded
        out = _embed(self.module, self.model.config, self.model.params, tokens, mask)
        return np.asarray(out)[: len(texts)]


def support(
    claims: Float[np.ndarray, "n d"], sources: Float[np.ndarray, "m d"]
) -> Float[np.ndarray, " n"]:
    """Each claim's largest cosine similarity to any source (rows are unit vectors)."""
    if sources.shape[0] == 0:
        return np.full(claims.shape[0], -1.0, np.float32)
    return (claims @ sources.T).max(axis=1)


class Calibration(NamedTuple):
    """A grounding threshold and how well it separates the labelled pairs it was fit on."""

    threshold: float
    balanced_accuracy: float
    n_pairs: int


def calibrate(scores: Float[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]) -> Calibration:
    """The threshold (midway between two neighbouring scores) that maximises balanced
    accuracy of `score >= threshold` against `labels` (True = grounded)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise InputError(f"scores {s.shape} and labels {y.shape} must be equal 1-d shapes")
    if y.all() or not y.any():
        raise InputError("calibration needs both grounded and ungrounded pairs")
    u = np.unique(s)
    cuts = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6]])
    bal = [balanced_accuracy(s >= c, y) for c in cuts]
    i = int(np.argmax(bal))
    return Calibration(float(cuts[i]), float(bal[i]), int(len(s)))


def balanced_accuracy(pred: Bool[np.ndarray, " n"], labels: Bool[np.ndarray, " n"]) -> float:
    """Mean of the true-positive and true-negative rates (NaN for a missing class)."""
    pred, labels = np.asarray(pred, bool), np.asarray(labels, bool)
    tpr = float(np.mean(pred[labels])) if labels.any() else np.nan
    tnr = float(np.mean(~pred[~labels])) if (~labels).any() else np.nan
    return float((tpr + tnr) / 2)


def accuracy(
    scores: Float[np.ndarray, " n"],
    labels: Bool[np.ndarray, " n"],
    threshold: float,
    kinds: Sequence[str] | None = None,
) -> dict[str, float]:
    """Accuracy of `score >= threshold` overall, balanced, and per kind of pair."""
    pred = np.asarray(scores) >= threshold
    y = np.asarray(labels, bool)
    out = {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": balanced_accuracy(pred, y)}
    if kinds is not None:
        k = np.asarray(kinds)
        for kind in sorted(set(kinds)):
            out[kind] = float(np.mean(pred[k == kind] == y[k == kind]))
    return out


class Judged(NamedTuple):
    """One sentence of an answer: its support, the closest source sentence, the verdict."""

    sentence: str
    support: float
    closest: str
    grounded: bool


def judge(
    answer: str,
    documents: Sequence[str],
    encode: Callable[[Sequence[str]], np.ndarray],
    threshold: float,
) -> list[Judged]:
    """Split `answer` into sentences and judge each against the documents' sentences."""
    sentences = split_sentences(answer)
    sources = [s for d in documents for s in split_sentences(d)]
    if not sentences:
        return []
    if not sources:
        raise InputError("judge needs at least one document sentence to ground answers in")
    a, src = encode(sentences), encode(sources)
    sims = a @ src.T
    best = sims.argmax(axis=1)
    return [
        Judged(s, float(sims[i, best[i]]), sources[best[i]], bool(sims[i, best[i]] >= threshold))
        for i, s in enumerate(sentences)
    ]
