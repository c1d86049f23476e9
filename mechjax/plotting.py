"""Static figures of patching and attribution grids and of attention patterns (matplotlib).

Every function builds a `matplotlib.figure.Figure` directly and returns it: no pyplot state
(no figure left registered, nothing to close) and no `matplotlib.use`, so a notebook's
inline backend keeps working and the Figure displays like any other. An image file is
written only when `path` is given (PNG for a `.png` path; the suffix picks the format).
For interactive HTML views see `mechjax.viewer`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

DPI = 120


def _label(token: str) -> str:
    """A token as a tick label: newlines and tabs escaped, spaces kept."""
    return repr(token)[1:-1]


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=DPI)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kw) -> tuple[Figure, Any]:
    """`(Figure, axes)` like `pyplot.subplots`, without pyplot's global state or backend,
    so scripts and notebooks keep theirs; nothing needs closing."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def heatmap(
    grid,
    path: str | Path | None = None,
    *,
    title: str = "",
    xlabel: str = "position",
    ylabel: str = "layer",
    xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
    center: bool = True,
    cbar_label: str = "",
) -> Figure:
    """A 2-D grid (rows = layers, row 0 at the bottom) as a Figure; token labels if given.

    Diverging colours centred on 0 when `center` (patching effects can have either sign).

    Args:
      grid: `[rows, cols]` array (a 1-D array is one column).
      path: where to write the image; nothing is written when None.
      xticklabels, yticklabels: one label per column / row (tokens are escaped).

    Returns:
      The Figure (axes 0 is the grid, axes 1 its colour bar).
    """
    g = np.asarray(grid, np.float64)
    if g.ndim == 1:
        g = g[:, None]
    if g.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D grid, got shape {g.shape}")
    if xticklabels is not None and len(xticklabels) != g.shape[1]:
        raise ValueError(
            f"{len(xticklabels)} token labels for {g.shape[1]} columns "
            f"(grid shape {g.shape}): pass one label per position"
        )
    if yticklabels is not None and len(yticklabels) != g.shape[0]:
        raise ValueError(
            f"{len(yticklabels)} row labels for {g.shape[0]} rows (grid shape {g.shape})"
        )
    size = (max(4, 0.5 * g.shape[1] + 2), max(3, 0.25 * g.shape[0] + 1.5))
    fig = Figure(figsize=size, layout="tight")
    ax = fig.add_subplot()
    lim = np.nanmax(np.abs(g)) if center and np.isfinite(g).any() else None
    im = ax.imshow(
        g,
        aspect="auto",
        origin="lower",
        cmap="RdBu_r" if center else "viridis",
        vmin=-lim if lim else None,
        vmax=lim,
    )
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)))
        ax.set_xticklabels([_label(t) for t in xticklabels], rotation=90, fontsize=7)
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)))
        ax.set_yticklabels([_label(t) for t in yticklabels], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar_label)
    return _save(fig, path)


def layer_position(grid, path=None, tokens=None, **kw) -> Figure:
    """A [layer, pos] grid with the prompt's tokens as column labels."""
    return heatmap(grid, path, xticklabels=tokens, **kw)


def layer_head(grid, path=None, **kw) -> Figure:
    """A [layer, head] grid."""
    return heatmap(grid, path, xlabel="head", **kw)


def attention_patterns(
    pattern,
    path: str | Path | None = None,
    tokens: Sequence[str] | None = None,
    *,
    head_names: Sequence[str] | None = None,
    ncols: int = 4,
    title: str = "",
) -> Figure:
    """One panel per head of an attention pattern, queries down and keys across.

    Args:
      pattern: `[n_heads, q_pos, k_pos]` probabilities, e.g. `cache[f"blocks.{l}.attn.
        hook_pattern"][0]` (the site holds `[batch, n_heads, q_pos, k_pos]`).
      path: where to write the image; nothing is written when None.
      tokens: one per key position, drawn on both axes (the queries are the last q_pos
        of them, as when decoding with a cache).
      head_names: panel titles; `H0, H1, ...` when None.

    Returns:
      The Figure; a shared colour bar on the fixed scale 0 to 1.
    """
    p = np.asarray(pattern, np.float64)
    if p.ndim != 3:
        raise ValueError(
            f"attention_patterns needs [n_heads, q_pos, k_pos], got shape {p.shape} "
            "(index the batch first: pattern[0])"
        )
    n = p.shape[0]
    names = [f"H{h}" for h in range(n)] if head_names is None else list(head_names)
    if len(names) != n:
        raise ValueError(f"{len(names)} head names for {n} heads")
    if tokens is not None and len(tokens) != p.shape[2]:
        raise ValueError(f"{len(tokens)} tokens for {p.shape[2]} key positions")
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    side = max(2.0, 0.25 * p.shape[2] + 1.0)
    fig = Figure(figsize=(side * cols + 1, side * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)  # the last row's unused panels
    labels = None if tokens is None else [_label(t) for t in tokens]
    for ax, name, ph in zip(axes, names, p):
        im = ax.imshow(ph, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(name)
        if labels is not None:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=90, fontsize=7)
            ax.set_yticks(range(p.shape[1]))
            ax.set_yticklabels(labels[-p.shape[1] :], fontsize=7)
    fig.colorbar(im, ax=list(axes[:n]), label="attention")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
