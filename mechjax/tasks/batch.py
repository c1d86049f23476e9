"""The shared part of every task: `TaskBatch`, single-token answers, and batch building.

A generator produces rows (clean and corrupted texts, answer ids, character offsets of
named spans); `_build` tokenises them, keeps rows of one token length (and, when asked,
of one layout: every named position at the same index in every row) and turns the spans
into per-row token positions (`batch.positions`). `TaskBatch.aligned` says whether the
named positions agree across rows; `TaskBatch.position_labels` names each absolute column
by what it holds in every row, so a figure never labels a column with row 0's token when
other rows hold something else there.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from mechjax.errors import InputError
from mechjax.metrics import LogitDiff

__all__ = ["TaskBatch", "TaskError", "check_spacing", "from_pair", "single_token"]


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
        """The clean prompt's tokens of one row, decoded one by one."""
        return [tokenizer.decode([int(t)]) for t in self.clean[row]]

    @property
    def aligned(self) -> bool:
        """True if every named position has the same token index in every row, so an
        absolute position means the same thing across the batch (`tasks.ioi` builds such
        batches unless `aligned=False`)."""
        return all(np.unique(np.asarray(v)).size <= 1 for v in self.positions.values())

    def position_labels(self, tokenizer) -> list[str]:
        """One label per absolute position that says what the column is in every row.

        A column holding a token shared by all rows is labelled with it (`" gave"`); one
        that is a named position in every row with its name (`"S2"`); one that holds
        different things in different rows joins them with `|` (`"S2|'.'"`: S2 in some
        rows, the token '.' in others), so a column of a batch whose layouts differ is
        never labelled with one row's token as if it applied to all. A column of
        unnamed tokens that differ across rows (place, object) shows row 0's with `~`.
        """
        n, p = self.clean.shape
        at = [{} for _ in range(n)]  # row -> {position: name}
        for name, col in self.positions.items():
            for r, j in enumerate(np.asarray(col) % p):
                at[r].setdefault(int(j), name)
        labels = []
        for j in range(p):
            toks = [tokenizer.decode([int(t)]) for t in self.clean[:, j]]
            per_row = [at[r].get(j) or repr(toks[r]) for r in range(n)]
            kinds = list(dict.fromkeys(per_row))
            if all(at[r].get(j) is None for r in range(n)):
                labels.append(toks[0] if len(set(toks)) == 1 else f"~{toks[0]}")
            elif len(kinds) == 1:
                labels.append(kinds[0])
            else:
                labels.append("|".join(kinds[:3]) + ("|..." if len(kinds) > 3 else ""))
        return labels


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
        hint = ""
        if text[:1].isalnum() and len(_encode(tokenizer, " " + text, add_bos=False)) == 1:
            hint = f" ({' ' + text!r}, with its leading space, is one token)"
        raise TaskError(
            f"answer {text!r} is {len(ids)} tokens {pieces!r} for this tokenizer{hint}; "
            "metrics read one logit per answer, so answers must be single tokens"
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


def _row_positions(tokenizer, r, length: int) -> dict[str, int]:
    """name -> token index of the last token of each named span of row `r`, and `end`."""
    out = {}
    for name, char_idx in r.get("spans", {}).items():
        out[name] = len(_encode(tokenizer, r["clean"][:char_idx])) - 1 if char_idx else 0
    out["end"] = length - 1
    return out


def _build(rows, tokenizer, task, n, info=None, aligned: bool = False) -> TaskBatch:
    """rows: dicts with clean, corrupted (texts), answer, wrong (ids), spans name -> char idx,
    and optionally a few-shot `prefix` put before both texts.

    Keeps the rows of the most frequent token length (clean == corrupted length), the
    first `n` of them in generation order. With `aligned`, keeps only the rows of the
    most frequent layout among those (the same token index of every named position).
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
    keep = [(r, c, k, _row_positions(tokenizer, r, best)) for r, c, k in enc if len(c) == best]
    what = "share one token length"
    if aligned:
        layouts = [tuple(sorted(e[3].items())) for e in keep]
        common = max(dict.fromkeys(layouts), key=layouts.count)  # ties: the first seen
        keep = [e for e, lay in zip(keep, layouts) if lay == common]
        what = f"share one token length and one layout of named positions {dict(common)}"
    keep = keep[:n]
    if len(keep) < n:
        raise TaskError(
            f"{task}: only {len(keep)} of the {n} requested pairs {what} ({best} tokens); ask "
            "for fewer or use fewer templates"
            + (" (or aligned=False to mix layouts)" if aligned else "")
        )
    names = list(dict.fromkeys(name for e in keep for name in e[3]))
    return TaskBatch(
        clean=np.asarray([c for _, c, _, _ in keep], np.int32),
        corrupted=np.asarray([k for _, _, k, _ in keep], np.int32),
        answers=np.asarray([r["answer"] for r, _, _, _ in keep], np.int32),
        wrongs=np.asarray([r["wrong"] for r, _, _, _ in keep], np.int32),
        positions={x: np.asarray([e[3][x] for e in keep], np.int32) for x in names},
        clean_text=tuple(r["clean"] for r, _, _, _ in keep),
        corrupted_text=tuple(r["corrupted"] for r, _, _, _ in keep),
        task=task,
        info=dict(info or {}),
    )


def check_spacing(tokenizer, prompt: str, answer: str, what: str = "answer") -> bool:
    """Warn if `answer` continues `prompt` as a new word but lacks the leading space.

    After a word, tokenizers of the GPT-2/Llama kind write the next word with its space
    (`" Mary"`, one token); `"Mary"` is another token (or several), so a metric reading
    it measures something the model rarely predicts there. Returns True if it warned.
    """
    if not answer or answer[:1].isspace() or not prompt or prompt[-1:].isspace():
        return False
    if not answer[:1].isalnum():
        return False  # punctuation attaches without a space
    spaced = _encode(tokenizer, " " + answer, add_bos=False)
    bare = _encode(tokenizer, answer, add_bos=False)
    if len(spaced) != 1 or spaced == bare[:1]:
        return False
    pieces = [tokenizer.decode([i]) for i in bare]
    warnings.warn(
        f"{what} {answer!r} has no leading space, but after the prompt's last word the "
        f"tokenizer writes the next word as {' ' + answer!r} (one token, id {spaced[0]}); "
        f"{answer!r} is {pieces!r} (ids {bare}), so the metric would read another token. "
        f"Pass {' ' + answer!r} to measure the word as the model would predict it",
        UserWarning,
        stacklevel=3,
    )
    return True


def from_pair(tokenizer, clean: str, corrupt: str, answer: str, wrong: str) -> TaskBatch:
    """One explicit pair (the command line's `--clean/--corrupt/--answer/--wrong`).

    An answer or wrong word without its leading space whose spaced form is the token
    that would follow the prompt warns, naming both forms (`check_spacing`).
    """
    for what, word in (("answer", answer), ("wrong", wrong)):
        check_spacing(tokenizer, clean, word, what)
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
