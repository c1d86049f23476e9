"""Heatmaps: Figures returned, PNGs only on request, labels drawn, backend and pyplot untouched."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from mechjax import plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_layer_position_png_grows_with_the_grid(tmp_path):
    small, big = tmp_path / "s.png", tmp_path / "b.png"
    plotting.layer_position(np.zeros((4, 3)), small, tokens=list("abc"))
    plotting.layer_position(
        np.random.RandomState(0).randn(30, 20),
        big,
        tokens=[f"tok{i}" for i in range(20)],
        title="grid",
    )
    (ws, hs), (wb, hb) = _png_size(small), _png_size(big)
    assert wb > ws and hb > hs


def test_labels_and_colour_scale_are_on_the_returned_figure():
    grid = np.asarray([[0.5, -2.0, 1.0], [0.0, 0.25, 1.5]])
    fig = plotting.heatmap(
        grid,
        title="IOI",
        xlabel="pos",
        ylabel="layer",
        xticklabels=["When", " Mary", "\n"],
        yticklabels=["L0", "L1"],
        cbar_label="logit diff",
    )
    assert isinstance(fig, Figure)
    ax, cax = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["When", " Mary", "\\n"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L0", "L1"]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("IOI", "pos", "layer")
    assert cax.get_ylabel() == "logit diff"
    assert ax.images[0].get_clim() == (-2.0, 2.0)  # diverging scale centred on 0
    np.testing.assert_array_equal(ax.images[0].get_array(), grid)
    assert plotting.layer_head(grid, center=False).axes[0].images[0].get_clim() == (-2.0, 1.5)
    assert plotting.layer_head(grid).axes[0].get_xlabel() == "head"


def test_png_is_written_only_when_a_path_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = plotting.layer_position(np.ones((2, 3)), tokens=list("abc"))
    assert isinstance(fig, Figure)
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "x.png"
    fig = plotting.layer_position(np.ones((2, 3)), out, list("abc"))  # positional, as callers do
    assert isinstance(fig, Figure)
    w, h = _png_size(out)
    fw, fh = fig.get_size_inches() * 120  # saved at 120 dpi
    assert (w, h) == (round(fw), round(fh))


def test_backend_and_pyplot_state_are_left_alone(tmp_path):
    # a notebook's inline backend must survive a call; "svg" stands in for it (any non-Agg
    # backend that needs no display)
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    figures = plt.get_fignums()
    try:
        matplotlib.use("svg")
        plotting.heatmap(np.eye(3), tmp_path / "a.png", title="eye")
        plotting.attention_patterns(np.ones((2, 3, 3)) / 3, tmp_path / "b.png")
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == figures, "a figure was left registered in pyplot"
    finally:
        matplotlib.use(before)
    _png_size(tmp_path / "a.png")


def test_attention_patterns_one_panel_per_head(tmp_path):
    pattern = np.tril(np.ones((3, 4, 4)))
    pattern /= pattern.sum(-1, keepdims=True)
    tokens = ["<s>", " a", "&", "\n"]
    fig = plotting.attention_patterns(
        pattern, tmp_path / "p.png", tokens, head_names=["L3H0", "L3H1", "L3H2"], ncols=2
    )
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["L3H0", "L3H1", "L3H2"]
    for h, ax in enumerate(panels):
        np.testing.assert_array_equal(ax.images[0].get_array(), pattern[h])
        assert ax.images[0].get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["<s>", " a", "&", "\\n"]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["<s>", " a", "&", "\\n"]
    assert sum(bool(ax.images) for ax in fig.axes) == 3, "an empty panel was drawn"
    _png_size(tmp_path / "p.png")
    with pytest.raises(ValueError, match=r"\[n_heads, q_pos, k_pos\].*\(1, 3, 4, 4\)"):
        plotting.attention_patterns(pattern[None])
    with pytest.raises(ValueError, match="2 head names for 3 heads"):
        plotting.attention_patterns(pattern, head_names=["a", "b"])


def test_nan_cells_and_one_dimensional_grids(tmp_path):
    g = np.ones((3, 4))
    g[1, 2] = np.nan
    plotting.heatmap(g, tmp_path / "nan.png")
    _png_size(tmp_path / "nan.png")
    assert plotting.heatmap(np.arange(5.0)).axes[0].images[0].get_array().shape == (5, 1)


def test_bad_grids_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"2-D grid, got shape \(2, 3, 4\)"):
        plotting.heatmap(np.zeros((2, 3, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="3 token labels for 4 columns"):
        plotting.layer_position(np.zeros((2, 4)), tmp_path / "y.png", tokens=["a", "b", "c"])
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        plotting.heatmap(np.zeros((2, 4)), yticklabels=["a"])


def test_library_and_analyses_never_pick_a_matplotlib_backend():
    # a backend is the user's (a notebook's inline one); only scripts may choose
    root = Path(__file__).resolve().parent.parent
    offenders = [
        str(p.relative_to(root))
        for top in ("mechjax", "analyses", "models")
        for p in (root / top).rglob("*.py")
        if "matplotlib.use(" in p.read_text()
    ]
    assert offenders == []
