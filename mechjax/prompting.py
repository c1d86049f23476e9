"""`test_prompt`: how a model ranks an answer after a prompt (TransformerLens's
`utils.test_prompt`), as a named result and a printed report."""

from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.errors import InputError
from mechjax.model import ENCODER_FAMILIES, Model, _tokenizer, run

__all__ = ["PromptResult", "test_prompt"]


class PromptResult(NamedTuple):
    """What `test_prompt` found: per answer token, its rank, logit and probability.

    `top_k[i]` lists the (token, probability) pairs the model ranks highest where answer
    token i is predicted. Rank 0 is the model's top choice.
    """

    prompt_tokens: list[str]
    answer_tokens: list[str]
    answer_ids: list[int]
    ranks: list[int]
    logits: list[float]
    probs: list[float]
    top_k: list[list[tuple[str, float]]]

    @property
    def rank(self) -> int:
        """Rank of the first answer token."""
        return self.ranks[0]

    @property
    def prob(self) -> float:
        """Probability of the first answer token."""
        return self.probs[0]

    def report(self) -> str:
        lines = [
            f"Tokenized prompt: {self.prompt_tokens}",
            f"Tokenized answer: {self.answer_tokens}",
        ]
        for i, tok in enumerate(self.answer_tokens):
            lines.append(
                f"Performance on answer token {tok!r}: rank {self.ranks[i]}, "
                f"logit {self.logits[i]:.2f}, prob {100 * self.probs[i]:.2f}%"
            )
            for r, (top, p) in enumerate(self.top_k[i]):
                lines.append(f"  top {r}: prob {100 * p:6.2f}%  {top!r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"PromptResult(answer={self.answer_tokens}, ranks={self.ranks}, "
            f"probs={[round(p, 4) for p in self.probs]})"
        )


def test_prompt(
    model: Model,
    prompt: str,
    answer: str | int | Sequence[int],
    top_k: int = 10,
    *,
    prepend_bos: bool | None = None,
    print_details: bool = True,
) -> PromptResult:
    """How a model ranks `answer` after `prompt`, like TransformerLens's `test_prompt`.

    The prompt (with the model's BOS convention unless `prepend_bos` says otherwise) and
    the answer (no BOS) are tokenized separately and concatenated, so the answer's
    tokens are exactly the ones scored. An answer without a leading space whose spaced
    form is the tokenizer's word-initial token warns, naming both forms.

    Args:
      model: a causal language model with a tokenizer (encoders are refused).
      prompt: the text before the answer.
      answer: answer text, or its token id(s).
      top_k: how many of the model's top tokens to list per answer token.
      print_details: print the report (`PromptResult.report()`).
    """
    if model.family.name in ENCODER_FAMILIES:
        raise InputError(
            f"test_prompt needs next-token logits, but {model.family.name!r} is an encoder: "
            "its forward returns hidden states (for BERT-style models, compare embeddings "
            "or mask-fill with a head of your own instead)"
        )
    tok = _tokenizer(model)
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    prompt_ids = tok.encode(prompt, add_bos=prepend_bos)
    answer_ids = _answer_ids(tok, prompt, answer)
    ids = jnp.asarray([prompt_ids + answer_ids], jnp.int32)
    logits = run(model, ids).logits[0, len(prompt_ids) - 1 : -1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    answer_arr = jnp.asarray(answer_ids)
    rows = jnp.arange(len(answer_ids))
    ranks = (logits > logits[rows, answer_arr][:, None]).sum(-1)
    top_p, top_i = jax.lax.top_k(jnp.exp(logp), top_k)
    result = PromptResult(
        prompt_tokens=tok.to_str_tokens(prompt_ids),
        answer_tokens=tok.to_str_tokens(answer_ids),
        answer_ids=list(answer_ids),
        ranks=[int(r) for r in ranks],
        logits=[float(x) for x in logits[rows, answer_arr]],
        probs=[float(x) for x in jnp.exp(logp[rows, answer_arr])],
        top_k=[
            list(zip(tok.to_str_tokens(i), (float(p) for p in ps)))
            for i, ps in zip(np.asarray(top_i), np.asarray(top_p))
        ],
    )
    if print_details:
        print(result.report())
    return result


def _answer_ids(tok, prompt: str, answer) -> list[int]:
    if not isinstance(answer, str):
        ids = [int(i) for i in np.atleast_1d(np.asarray(answer))]
        if not ids:
            raise InputError("answer has no tokens")
        return ids
    ids = tok.encode(answer, add_bos=False)
    if not ids:
        raise InputError(f"answer {answer!r} has no tokens")
    if answer[:1].isspace() or not prompt or prompt[-1:].isspace():
        return ids
    spaced = tok.encode(" " + answer, add_bos=False)
    if len(spaced) == 1 and spaced != ids[:1]:
        warnings.warn(
            f"answer {answer!r} has no leading space, but after a word the next word is "
            f"usually the word-initial token {' ' + answer!r} (id {spaced[0]}); {answer!r} "
            f"is {tok.to_str_tokens(ids)} (ids {ids}). Pass answer={' ' + answer!r} to test "
            "the spaced form",
            UserWarning,
            stacklevel=3,
        )
    return ids


test_prompt.__test__ = False  # a library function, not a test, if a test module imports it
