"""An attention-based antecedent predictor on a language model, and its clusters.

Features (`attention_features`): the model reads the whole document once; for each
mention i, the attention weight from i's last token to the tokens of every mention j,
summed over j's tokens, for every layer and head: `[n_layers * n_heads]` numbers per
pair (i, j). One compiled program per padded document width (the mention axis is padded
to a fixed size), the patterns of every layer reduced on the device to the mention pairs:
`mechjax.harvest` would move whole patterns to the host (30 x 9 x 1024 x 1024 floats, a
gigabyte, for one 1024-token document), since it keeps all positions, the last, or one
per sequence.

Scorer (`fit_scorer`): a mention-ranking model (Wiseman et al. 2015; Lee et al. 2017's
antecedent softmax): for mention i, candidates are the earlier mentions j < i, scored
`w . f(i, j)` with f the standardised log attention, and a dummy "new entity" scored by a
weight per mention kind (name, pronoun, role). Trained with optax on the marginal
log-likelihood of the gold antecedents (any earlier mention of the same entity; the dummy
for a first mention), L2-penalised: a softmax over each mention's own candidate set,
which `mechjax.probes`' per-layer classifiers do not fit. Decoding (`clusters_of`): each
mention links to its best candidate or opens a new entity (best-first clustering).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Int

from mechjax.analyses.coreference.documents import Doc

__all__ = [
    "KINDS",
    "DocFeatures",
    "Scorer",
    "attention_features",
    "clusters_of",
    "fit_scorer",
    "predict_antecedents",
    "token_spans",
]

KINDS = ("name", "pronoun", "role")
EPS = 1e-4  # floor of the attention weights before the log


class DocFeatures(NamedTuple):
    """Attention features of one document, padded on the mention axis."""

    feats: np.ndarray  # float32 [m_pad, m_pad, n_layers * n_heads]: from mention i to j
    n_mentions: int
    kinds: np.ndarray  # int [m_pad], index into KINDS
    entity: np.ndarray  # int [m_pad], gold entity (-1 on padding)
    n_tokens: int


def token_spans(offsets: Sequence[tuple[int, int]], doc: Doc) -> list[tuple[int, int]]:
    """Each mention's model-token span (first, last), from the tokens' character offsets."""
    out = []
    for m in doc.mentions:
        s, e = m.chars
        hit = [t for t, (a, b) in enumerate(offsets) if a < e and b > s]
        if not hit:
            raise ValueError(f"mention {doc.text[s:e]!r} at {m.chars} has no token")
        out.append((hit[0], hit[-1]))
    return out


def _pair_attention(model, tokens, query, member, sites):
    import mechjax as mj

    out = mj.run(model, tokens, capture=sites)
    rows = jnp.stack([out.cache[s][0][:, query, :] for s in sites])  # [L, H, M, T]
    return jnp.einsum("lhmt,nt->mnlh", rows, member)


_pair_attention_jit = jax.jit(_pair_attention, static_argnames=("sites",))


def attention_features(model, doc: Doc, width: int, m_pad: int) -> DocFeatures:
    """The attention features of `doc`, its tokens right-padded to `width`.

    Args:
      model: a decoder with a tokenizer (e.g. `mj.load("smollm2-135m")`).
      doc: the document.
      width: the padded token length (documents of one width share a program).
      m_pad: the padded number of mentions.
    """
    enc = model.tokenizer.backend.encode(doc.text, add_special_tokens=False)
    ids, offsets = list(enc.ids), list(enc.offsets)
    if model.tokenizer.add_bos_default:
        ids = [model.tokenizer.bos_token_id] + ids
        offsets = [(0, 0)] + offsets
    if len(ids) > width:
        raise ValueError(f"document has {len(ids)} tokens, more than the width {width}")
    if len(doc.mentions) > m_pad:
        raise ValueError(f"document has {len(doc.mentions)} mentions, more than m_pad={m_pad}")
    spans = token_spans(offsets, doc)
    tokens = np.zeros((1, width), np.int32)
    tokens[0, : len(ids)] = ids
    query = np.zeros(m_pad, np.int32)
    member = np.zeros((m_pad, width), np.float32)
    for k, (a, b) in enumerate(spans):
        query[k] = b
        member[k, a : b + 1] = 1.0
    sites = tuple(f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layers))
    f = _pair_attention_jit(
        model, jnp.asarray(tokens), jnp.asarray(query), jnp.asarray(member), sites
    )
    n = len(doc.mentions)
    kinds = np.zeros(m_pad, np.int32)
    entity = np.full(m_pad, -1, np.int32)
    for k, m in enumerate(doc.mentions):
        kinds[k] = KINDS.index(m.kind)
        entity[k] = m.entity
    feats = np.asarray(f, np.float32).reshape(m_pad, m_pad, -1)
    return DocFeatures(feats, n, kinds, entity, len(ids))


# ------------------------------------------------------------------------- the scorer


class Scorer(NamedTuple):
    """w over the standardised log attention, one dummy weight per mention kind."""

    w: Any  # [F]
    dummy: Any  # [len(KINDS)]
    mu: Any  # [F]
    sd: Any  # [F]


def _stack(docs: Sequence[DocFeatures]):
    x = np.log(np.stack([d.feats for d in docs]) + EPS)  # [N, M, M, F]
    kinds = np.stack([d.kinds for d in docs])
    ent = np.stack([d.entity for d in docs])
    m = x.shape[1]
    earlier = np.tril(np.ones((m, m), bool), -1)[None]  # j < i
    valid = (ent >= 0)[:, :, None] & (ent >= 0)[:, None, :] & earlier
    gold = valid & (ent[:, :, None] == ent[:, None, :])
    first = (ent >= 0) & ~gold.any(-1)
    return x, kinds, ent >= 0, valid, gold, first


def _logits(params, x, kinds, valid):
    w, dummy, mu, sd = params
    s = ((x - mu) / sd) @ w  # [N, M, M]
    s = jnp.where(valid, s, -1e9)
    d = dummy[kinds][..., None]  # [N, M, 1]
    return jnp.concatenate([d, s], axis=-1)  # candidate 0 = new entity


def _nll(params, mu, sd, x, kinds, valid, target, real, l2):
    w, dummy = params
    logits = _logits((w, dummy, mu, sd), x, kinds, valid)
    logz = jax.nn.logsumexp(logits, -1)
    logp = jax.nn.logsumexp(jnp.where(target, logits, -1e9), -1) - logz
    return -(logp * real).sum() / real.sum() + l2 * (w**2).sum()


def fit_scorer(
    docs: Sequence[DocFeatures], *, steps: int = 300, lr: float = 0.05, l2: float = 1e-3
) -> Scorer:
    """Fit the mention-ranking scorer on training documents (full batch, Adam); the
    whole optimisation is one compiled `lax.scan` over the steps, the data its argument."""
    x, kinds, real, valid, gold, first = _stack(docs)
    pairs = x[valid]
    mu, sd = pairs.mean(0), pairs.std(0) + 1e-6
    target = np.concatenate([first[..., None], gold], axis=-1)  # [N, M, 1 + M]
    opt = optax.adam(lr)
    params = (jnp.zeros(x.shape[-1]), jnp.zeros(len(KINDS)))
    data = tuple(jnp.asarray(a) for a in (mu, sd, x, kinds, valid, target, real))
    w, dummy = _fit(params, opt.init(params), data, jnp.float32(l2), steps, opt)
    return Scorer(np.asarray(w), np.asarray(dummy), mu, sd)


@functools.partial(jax.jit, static_argnames=("steps", "opt"))
def _fit(params, state, data, l2, steps: int, opt):
    def step(carry, _):
        params, state = carry
        grads = jax.grad(_nll)(params, *data, l2)
        updates, state = opt.update(grads, state)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, state), None, length=steps)
    return params


def predict_antecedents(scorer: Scorer, doc: DocFeatures) -> Int[np.ndarray, " mentions"]:
    """Per mention: the index of its predicted antecedent, or -1 for a new entity."""
    x, kinds, _, valid, _, _ = _stack([doc])
    logits = np.asarray(_logits(tuple(scorer), x, kinds, valid))[0]
    return (logits[: doc.n_mentions].argmax(-1) - 1).astype(np.int64)


def clusters_of(
    antecedents: Int[np.ndarray, " mentions"] | Sequence[int], spans: Sequence[Any]
) -> list[list[Any]]:
    """Entities from antecedent links (best-first): `spans[i]` joins its antecedent's."""
    cluster: list[int] = []
    out: list[list[Any]] = []
    for i, a in enumerate(int(a) for a in antecedents):
        if a < 0:
            cluster.append(len(out))
            out.append([spans[i]])
        else:
            cluster.append(cluster[a])
            out[cluster[a]].append(spans[i])
    return out
