"""HTML views: escaped text, self-contained pages, and cells where and as coloured as expected.

The screenshot test renders the pages in headless Chromium and reads the cell colours off
the PNG at the pixel offsets the viewer's fixed layout promises.
"""

import html.parser
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from mechjax import viewer
from mechjax.viewer import BAR_H, BLUE, CELL, COL_LABEL_H, PAD, RED, ROW_LABEL_W, TITLE_H

WHITE = (255, 255, 255)
# tokens that break naive pages: markup, entities, quotes, whitespace, a script end tag
NASTY = ["<s>", " When", "&amp;", "\n", "\"q'", "</script>", "<!--", "  x\t"]
SHOWN = ["<s>", " When", "&amp;", "\\n", "\"q'", "</script>", "<!--", "  x\\t"]
INSTALL = "apt-get update && apt-get install -y chromium"


class _Texts(html.parser.HTMLParser):
    """Text of the elements of each `mjv-*` class, and every inline style, in page order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts, self.styles, self.titles, self.ids, self._open = {}, [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._open.append(a.get("class", ""))
        self.texts.setdefault(a.get("class", ""), []).append("")
        if "style" in a:
            self.styles.append(a["style"])
        if "title" in a:
            self.titles.append(a["title"])
        if "id" in a:
            self.ids.append(a["id"])

    def handle_endtag(self, tag):
        self._open.pop()

    def handle_data(self, data):
        if self._open and self.texts.get(self._open[-1]):
            self.texts[self._open[-1]][-1] += data


def _parse(fragment: str) -> _Texts:
    p = _Texts()
    p.feed(fragment)
    p.close()
    return p


def _pattern():
    """Head 0 attends each token to itself, head 1 everything to the first token."""
    n = len(NASTY)
    return np.stack([np.eye(n), np.eye(n)[[0] * n]])


def test_token_text_is_escaped_and_shown_as_given():
    p = _parse(
        viewer.heatmap(np.zeros((2, len(NASTY))), ["L0", "<L1>"], NASTY, title="a<b").fragment
    )
    assert p.texts["mjv-col"] == SHOWN
    assert p.texts["mjv-row"] == ["L0", "<L1>"]
    assert p.texts["mjv-title"] == ["a<b"]
    page = viewer.attention_patterns(NASTY, _pattern(), head_names=["</button>", "H&1"]).fragment
    a = _parse(page)
    assert a.texts["mjv-tok"] == SHOWN
    assert a.texts["mjv-col"] == SHOWN and a.texts["mjv-row"] == SHOWN
    assert a.texts["mjv-head"] == ["</button>", "H&1"]
    assert page.count("<script") == 1 and page.count("</script>") == 1, "a token ended the script"
    assert page.count("<!--") == 0


def test_views_are_self_contained_pages(tmp_path):
    for view in (
        viewer.heatmap(np.eye(3)),
        viewer.attention_patterns(list("abc"), np.ones((2, 3, 3)) / 3),
    ):
        frag = view._repr_html_()
        assert frag == view.fragment
        for remote in ("http:", "https:", "//cdn", "<link", " src=", "import(", "fetch("):
            assert remote not in frag, f"the view loads {remote!r}"
        path = view.save(tmp_path / "v.html")
        text = path.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
        assert frag in text
    a, b = (viewer.attention_patterns(["a"], np.ones((1, 1, 1))) for _ in range(2))
    ids = [_parse(v.fragment).ids for v in (a, b)]
    assert len(ids[0]) == 1 and ids[0] != ids[1], "two views in a notebook would share an id"


def test_heatmap_colours_and_tooltips():
    g = np.asarray([[0.0, 2.0, -2.0], [1.0, np.nan, -0.5]])
    p = _parse(viewer.heatmap(g, ["a", "b"], ["x", "y", "z"]).fragment)
    cells = [s.split(":", 1)[1] for s in p.styles if s.startswith("background:rgb")]
    assert cells == [
        "rgb(255,255,255)",
        "rgb(178,24,43)",
        "rgb(33,102,172)",
        "rgb(216,140,149)",  # halfway from white to red (139.5 and 216.5 round to even)
        "rgb(221,221,221)",
        "rgb(200,217,234)",  # a quarter of the way to blue
    ]
    assert "b / z: -0.5" in p.titles and "a / y: 2" in p.titles
    seq = _parse(viewer.heatmap(g, center=False).fragment)
    cells = [s.split(":", 1)[1] for s in seq.styles if s.startswith("background:rgb")]
    assert cells[2] == "rgb(255,255,255)" and cells[1] == "rgb(33,102,172)"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"2-D grid, got shape \(2, 3, 4\)"):
        viewer.heatmap(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="1 column labels for 3 columns"):
        viewer.heatmap(np.zeros((2, 3)), col_labels=["a"])
    with pytest.raises(ValueError, match=r"\[n_heads, q_pos, k_pos\].*\(1, 2, 3, 3\)"):
        viewer.attention_patterns(list("abc"), np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="2 tokens for 3 key positions"):
        viewer.attention_patterns(list("ab"), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="1 head names for 2 heads"):
        viewer.attention_patterns(list("abc"), np.zeros((2, 3, 3)), head_names=["a"])
    with pytest.raises(ValueError, match="head 2 out of range"):
        viewer.attention_patterns(list("abc"), np.zeros((2, 3, 3)), head=2)


def _screenshot(tmp_path, fragments, tops, size):
    """One page holding each fragment at its own top offset, rendered to an RGB uint8 array."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail(
            f"this test renders HTML in headless Chromium, which is not installed: {INSTALL}"
        )
    body = "".join(
        f'<div style="position:absolute;left:0;top:{t}px">{f}</div>'
        for f, t in zip(fragments, tops)
    )
    page = viewer.HTML(body).save(tmp_path / "page.html")
    png = tmp_path / "shot.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",  # colours as written, no display profile conversion
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        f"--window-size={size[0]},{size[1]}",
        page.as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), f"Chromium wrote no screenshot (rc {run.returncode}): {run.stderr[-2000:]}"
    img = matplotlib.image.imread(png)
    return np.round(img[..., :3] * 255).astype(int)


def _cells(img, top, n_rows, n_cols, bar=0):
    """Colour at the centre of every cell of a view whose top-left corner is at (0, top)."""
    y0 = top + PAD + TITLE_H + bar + COL_LABEL_H
    x0 = PAD + ROW_LABEL_W
    ys = y0 + CELL * np.arange(n_rows) + CELL // 2
    xs = x0 + CELL * np.arange(n_cols) + CELL // 2
    return img[ys[:, None], xs[None, :]]


def _expect(img_cells, where, colour, other=WHITE, what=""):
    want = np.where(where[..., None], np.asarray(colour), np.asarray(other))
    bad = [tuple(map(int, rc)) for rc in np.argwhere(np.abs(img_cells - want).max(-1) > 3)]
    assert not bad, (
        f"{what}: {len(bad)} cells off, first at (row, col) {bad[0]}: "
        f"{img_cells[bad[0]].tolist()} instead of {want[bad[0]].tolist()}"
    )


def test_browser_shows_the_expected_cells(tmp_path):
    n = len(NASTY)
    g = np.zeros((3, n))
    g[1, 2], g[2, 0] = 1.0, -1.0
    views = [
        viewer.heatmap(g, ["L0", "L1", "L2"], NASTY, title="<grid>").fragment,
        viewer.attention_patterns(NASTY, _pattern(), title="default head").fragment,
        viewer.attention_patterns(NASTY, _pattern(), head=1).fragment,
    ]
    tops = [0, 250, 250 + 400]
    img = _screenshot(tmp_path, views, tops, (500, 1050))

    red, blue = np.zeros(g.shape, bool), np.zeros(g.shape, bool)
    red[1, 2], blue[2, 0] = True, True
    cells = _cells(img, tops[0], *g.shape)
    _expect(np.where(blue[..., None], WHITE, cells), red, RED, what="heatmap, red cell")
    _expect(np.where(red[..., None], WHITE, cells), blue, BLUE, what="heatmap, blue cell")
    # the cells are CELL pixels wide: the red one spans [2, CELL - 3] within its square
    y, x = PAD + TITLE_H + COL_LABEL_H + CELL, PAD + ROW_LABEL_W + 2 * CELL
    assert (np.abs(img[y + 2 : y + CELL - 2, x + 2 : x + CELL - 2] - RED).max(-1) <= 3).all()

    eye = np.eye(n, dtype=bool)
    _expect(_cells(img, tops[1], n, n, BAR_H), eye, BLUE, what="head 0 (the default)")
    first = np.zeros((n, n), bool)
    first[:, 0] = True
    _expect(_cells(img, tops[2], n, n, BAR_H), first, BLUE, what="head 1 (head=1)")
