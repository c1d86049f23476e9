"""Counterfactual datasets: (base, source) prompt pairs with the high-level model's labels.

A `CounterfactualData` row is one interchange: run the base prompt, replace the
variable's features at `base_positions` with those of the source prompt at
`source_positions`, and compare the model's next-token prediction at the base prompt's
last real token (`base_lengths - 1`) with `labels`, the token the high-level causal model
outputs for the base input with the variable set to its value on the source input.
Prompts are right-padded (`*_mask` True on real tokens), so bases and sources of
different lengths, and positions that differ per row, are both represented exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mechjax.errors import InputError


@dataclasses.dataclass(frozen=True)
class CounterfactualData:
    """Interchange pairs for one variable of a causal model.

    Attributes:
      base, source: int32 `[n, pos]` token ids, right-padded (`pos` may differ).
      base_mask, source_mask: bool, same shapes, True on real tokens.
      base_positions, source_positions: int32 `[n, k]`, the k token positions per row
        where the variable is intervened (base) and read (source); k is the same for both.
      labels: int32 `[n]`, the counterfactual next token.
      base_labels: int32 `[n]`, the base input's own next token (no intervention).
      variable: the high-level variable swapped; `task`: the causal model's name.
      info: per-row arrays (operands, names, ...) and texts, for reports.
    """

    base: np.ndarray
    source: np.ndarray
    base_mask: np.ndarray
    source_mask: np.ndarray
    base_positions: np.ndarray
    source_positions: np.ndarray
    labels: np.ndarray
    base_labels: np.ndarray
    variable: str
    task: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = self.base.shape[0]
        for name in (
            "source",
            "base_mask",
            "source_mask",
            "base_positions",
            "source_positions",
            "labels",
            "base_labels",
        ):
            v = getattr(self, name)
            if v.shape[0] != n:
                raise InputError(f"CounterfactualData.{name} has {v.shape[0]} rows, base has {n}")
        if self.base_mask.shape != self.base.shape or self.source_mask.shape != self.source.shape:
            raise InputError("base_mask/source_mask must have the shapes of base/source")
        if (
            self.base_positions.ndim != 2
            or self.base_positions.shape != self.source_positions.shape
        ):
            raise InputError(
                f"base_positions and source_positions must both be [n, k], got "
                f"{self.base_positions.shape} and {self.source_positions.shape}"
            )
        for side in ("base", "source"):
            pos, mask = getattr(self, f"{side}_positions"), getattr(self, f"{side}_mask")
            lengths = mask.sum(1)
            if (pos < 0).any() or (pos >= lengths[:, None]).any():
                raise InputError(f"{side}_positions point outside the {side} prompts' real tokens")

    def __len__(self) -> int:
        return int(self.base.shape[0])

    @property
    def base_lengths(self) -> np.ndarray:
        return self.base_mask.sum(1).astype(np.int32)

    def rows(self, index) -> "CounterfactualData":
        """The pairs at `index` (slice or index array), with per-row `info` arrays."""
        idx = np.atleast_1d(np.arange(len(self))[index])  # an int index keeps the row axis
        info = {
            k: np.asarray(v)[idx] if _per_row(v, len(self)) else v for k, v in self.info.items()
        }
        return dataclasses.replace(
            self,
            base=self.base[idx],
            source=self.source[idx],
            base_mask=self.base_mask[idx],
            source_mask=self.source_mask[idx],
            base_positions=self.base_positions[idx],
            source_positions=self.source_positions[idx],
            labels=self.labels[idx],
            base_labels=self.base_labels[idx],
            info=info,
        )

    def split(self, n_train: int) -> tuple["CounterfactualData", "CounterfactualData"]:
        """(first n_train rows, the rest): train and held-out pairs."""
        if not 0 < n_train < len(self):
            raise InputError(f"n_train must be in (0, {len(self)}), got {n_train}")
        return self.rows(slice(0, n_train)), self.rows(slice(n_train, None))


def _per_row(v, n: int) -> bool:
    """Whether an `info` value holds one entry per row (a 0-d array or a scalar does not)."""
    if isinstance(v, np.ndarray):
        return v.ndim > 0 and len(v) == n
    return isinstance(v, (list, tuple)) and len(v) == n


def pad_rows(rows: list[list[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists: (tokens int32 [n, max_len], mask bool)."""
    width = max(len(r) for r in rows)
    tokens = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = True
    return tokens, mask
