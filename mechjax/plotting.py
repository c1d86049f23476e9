"""Heatmaps of patching and attribution grids as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def heatmap(
    grid,
    path,
    *,
    title: str = "",
    xlabel: str = "position",
    ylabel: str = "layer",
    xticklabels: Sequence[str] | None = None,
    center: bool = True,
    cbar_label: str = "",
) -> str:
    """Save a 2-D grid (rows = layers) as a PNG; token labels on the x axis if given.

    Diverging colours centred on 0 when `center` (patching effects can have either sign).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * g.shape[1] + 2), max(3, 0.25 * g.shape[0] + 1.5)))
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
        ax.set_xticklabels([repr(t)[1:-1] for t in xticklabels], rotation=90, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar_label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def layer_position(grid, path, tokens=None, **kw) -> str:
    """A [layer, pos] grid with the prompt's tokens as column labels."""
    return heatmap(grid, path, xticklabels=tokens, **kw)


def layer_head(grid, path, **kw) -> str:
    """A [layer, head] grid."""
    return heatmap(grid, path, xlabel="head", **kw)
