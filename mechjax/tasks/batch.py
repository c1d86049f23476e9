"""The shared part of every task: `TaskBatch`, single-token answers, and batch building.

A generator produces rows (clean and corrupted texts, answer ids, character offsets of
named spans); `_build` tokenises them, keeps rows of one token length and turns the spans
into per-row token positions (`batch.positions`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mechjax.errors import InputError
from mechjax.metrics import LogitDiff

__all__ = ["TaskBatch", "TaskError", "from_pair", "single_token"]


class TaskError(InputError):
    """A task that cannot be built for this tokenizer (multi-token answers, no pairs)."""


@dataclasses.dataclass(frozen=True)
class TaskBatch:
    """Clean and corrupted prompts of equal length, with answer tokens.

    Attributes:
      clean, corrupted: int32 `[batch, pos]`.
      answers: int32 `[batch]`, the clean run's answer (IO name, result r, ...).
      wrongs: int32 `[batch]`, the competing answer (S name, the alt result r', ...).
      positions: name -> int32 `[batch]` (e.g. `IO`, `S1`, `S2`, `end`, `op1`).
      clean_text, corrupted_text: the prompts.
      task: the generator's name; `info`: extra per-task metadata.
    """

    clean: np.ndarray
    corrupted: np.ndarray
    answers: np.ndarray
    wrongs: np.ndarray
    positions: dict
    clean_text: tuple
    corrupted_text: tuple
    task: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def rows(self, index) -> "TaskBatch":
        """The pairs at `index` (a slice or an index array), with their positions, texts
        and per-row `info` arrays."""
        idx = np.arange(len(self))[index]
        n = len(self)
        info = {
            k: v[idx] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v
            for k, v in self.info.items()
        }
        return dataclasses.replace(
            self,
            clean=self.clean[idx],
            corrupted=self.corrupted[idx],
            answers=self.answers[idx],
            wrongs=self.wrongs[idx],
            positions={k: np.asarray(v)[idx] for k, v in self.positions.items()},
            clean_text=tuple(self.clean_text[i] for i in idx),
            corrupted_text=tuple(self.corrupted_text[i] for i in idx),
            info=info,
        )

    def logit_diff(self) -> LogitDiff:
        """The metric logit[answer] - logit[wrong] at the last position, as a pytree."""
        return LogitDiff(np.asarray(self.answers), np.asarray(self.wrongs))

    def str_tokens(self, tokenizer, row: int = 0) -> list[str]:
        """The clean prompt's tokens of one row, decoded one by one (for plot labels)."""
        return [tokenizer.decode([int(t)]) for t in self.clean[row]]


# ------------------------------------------------------------------------------ helpers


def _encode(tokenizer, text: str, add_bos=None) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_bos=add_bos))
    except TypeError:  # a tokenizer without add_bos
        return list(tokenizer.encode(text))


def single_token(tokenizer, text: str) -> int:
    """The id of `text` if it is one token (no BOS) that decodes back to it, else
    `TaskError` naming the pieces (or the unknown-word token it became)."""
    ids = _encode(tokenizer, text, add_bos=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise TaskError(
            f"answer {text!r} is {len(ids)} tokens {pieces!r} for this tokenizer; metrics "
            "read one logit per answer, so answers must be single tokens"
        )
    back = tokenizer.decode(ids)
    if back.strip().casefold() != text.strip().casefold():
        raise TaskError(
            f"answer {text!r} is one token that decodes to {back!r} (an unknown-word token?) "
            "for this tokenizer; the logit read would not be the answer's"
        )
    return ids[0]


def _is_single(tokenizer, text: str) -> bool:
    """One token that decodes back to the text (an unknown-word token does not count)."""
    ids = _encode(tokenizer, text, add_bos=False)
    return len(ids) == 1 and tokenizer.decode(ids).strip() == text.strip()


def _build(rows, tokenizer, task, n, info=None) -> TaskBatch:
    """rows: dicts with clean, corrupted (texts), answer, wrong (ids), spans name -> char idx,
    and optionally a few-shot `prefix` put before both texts.

    Keeps the rows of the most frequent token length (clean == corrupted length), the
    first `n` of them in generation order.
    """
    enc = []
    for r in rows:
        if r.get("prefix"):  # few-shot examples before both prompts; spans shift with them
            pre = r["prefix"]
            r = {
                **r,
                "clean": pre + r["clean"],
                "corrupted": pre + r["corrupted"],
                "spans": {k: v + len(pre) for k, v in r.get("spans", {}).items()},
            }
        c, k = _encode(tokenizer, r["clean"]), _encode(tokenizer, r["corrupted"])
        if len(c) == len(k):
            enc.append((r, c, k))
    if not enc:
        raise TaskError(f"{task}: no clean/corrupted pair has equal token lengths")
    lengths = [len(c) for _, c, _ in enc]
    best = max(sorted(set(lengths)), key=lengths.count)
    keep = [e for e in enc if len(e[1]) == best][:n]
    if len(keep) < n:
        raise TaskError(
            f"{task}: only {len(keep)} of the {n} requested pairs share one token length "
            f"({best}); ask for fewer or use fewer templates"
        )
    positions: dict[str, list[int]] = {}
    for r, _c, _ in keep:
        for name, char_idx in r.get("spans", {}).items():
            prefix = r["clean"][:char_idx]
            positions.setdefault(name, []).append(
                len(_encode(tokenizer, prefix)) - 1 if char_idx else 0
            )
        positions.setdefault("end", []).append(best - 1)
    return TaskBatch(
        clean=np.asarray([c for _, c, _ in keep], np.int32),
        corrupted=np.asarray([k for _, _, k in keep], np.int32),
        answers=np.asarray([r["answer"] for r, _, _ in keep], np.int32),
        wrongs=np.asarray([r["wrong"] for r, _, _ in keep], np.int32),
        positions={k: np.asarray(v, np.int32) for k, v in positions.items()},
        clean_text=tuple(r["clean"] for r, _, _ in keep),
        corrupted_text=tuple(r["corrupted"] for r, _, _ in keep),
        task=task,
        info=dict(info or {}),
    )


def from_pair(tokenizer, clean: str, corrupt: str, answer: str, wrong: str) -> TaskBatch:
    """One explicit pair (the command line's `--clean/--corrupt/--answer/--wrong`)."""
    row = {
        "clean": clean,
        "corrupted": corrupt,
        "answer": single_token(tokenizer, answer),
        "wrong": single_token(tokenizer, wrong),
    }
    c, k = _encode(tokenizer, clean), _encode(tokenizer, corrupt)
    if len(c) != len(k):
        raise TaskError(
            f"clean and corrupted prompts must have the same token length, got {len(c)} "
            f"and {len(k)} tokens"
        )
    return _build([row], tokenizer, "pair", 1)
