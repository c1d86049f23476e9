"""Heatmaps: valid PNGs whose size follows the grid, token labels drawn, bad grids refused."""

import numpy as np
import pytest

from mechjax import plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_layer_position_png_grows_with_the_grid(tmp_path):
    small = plotting.layer_position(np.zeros((4, 3)), tmp_path / "s.png", tokens=list("abc"))
    big = plotting.layer_position(
        np.random.RandomState(0).randn(30, 20),
        tmp_path / "b.png",
        tokens=[f"tok{i}" for i in range(20)],
        title="grid",
    )
    (ws, hs), (wb, hb) = _png_size(small), _png_size(big)
    assert wb > ws and hb > hs


def test_token_labels_and_colour_scale(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, **kw):
        ax = fig.axes[0]
        seen["labels"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["clim"] = ax.images[0].get_clim()
        seen["ylabel"] = ax.get_ylabel()
        return real_savefig(fig, path, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    grid = np.asarray([[0.5, -2.0, 1.0], [0.0, 0.25, 1.5]])
    plotting.layer_position(grid, tmp_path / "t.png", tokens=["When", " Mary", "\n"])
    assert seen["labels"] == ["When", " Mary", "\\n"]  # newlines escaped, spaces kept
    assert seen["clim"] == (-2.0, 2.0)  # diverging scale centred on 0
    assert seen["ylabel"] == "layer"
    plotting.layer_head(grid, tmp_path / "h.png", center=False)
    assert seen["clim"] == (-2.0, 1.5)
    plt.close("all")


def test_nan_cells_and_one_dimensional_grids(tmp_path):
    g = np.ones((3, 4))
    g[1, 2] = np.nan
    _png_size(plotting.heatmap(g, tmp_path / "nan.png"))
    _png_size(plotting.heatmap(np.arange(5.0), tmp_path / "vec.png"))


def test_bad_grids_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"2-D grid, got shape \(2, 3, 4\)"):
        plotting.heatmap(np.zeros((2, 3, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="3 token labels for 4 columns"):
        plotting.layer_position(np.zeros((2, 4)), tmp_path / "y.png", tokens=["a", "b", "c"])
