"""Interactive HTML views of attention patterns and grids that work offline (after circuitsvis).

`attention_patterns` shows one head at a time (buttons pick the head); hovering a cell or a
token of the prompt shows where that query attends, a click keeps it. `heatmap` draws a
labelled grid with the value of each cell in its tooltip. Both return an `HTML` value:
it renders inline in Jupyter (`_repr_html_`) and `.save(path)` writes a standalone page.

Everything is inline (CSS, a few lines of JavaScript, the numbers): no CDN, no network,
no Python dependency beyond numpy. Token text is HTML-escaped and shown with newlines and
other control characters escaped (`\\n`), spaces kept, so any token displays and none can
break the page; the script carries numbers only.

Layout is in fixed pixels so that a cell's place on the page is known: the grid's first
cell starts at `(PAD + ROW_LABEL_W, PAD + TITLE_H + BAR_H + COL_LABEL_H)` from the view's
top-left corner (`BAR_H` is 0 for `heatmap`), cells are `cell_px` square, row 0 on top.
Colours: diverging grids go white (0) to `RED` (+max |value|) and `BLUE` (-max |value|);
attention goes white (0) to `BLUE` (1); NaN cells are `NAN`.
"""

from __future__ import annotations

import html
import json
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

PAD, TITLE_H, BAR_H, ROW_LABEL_W, COL_LABEL_H, CELL = 8, 24, 32, 120, 80, 20
WHITE, RED, BLUE, NAN = (255, 255, 255), (178, 24, 43), (33, 102, 172), (221, 221, 221)


@dataclass(frozen=True)
class HTML:
    """A self-contained HTML fragment: displays in Jupyter, `.save` writes a whole page."""

    fragment: str
    title: str = "mechjax"

    def _repr_html_(self) -> str:
        return self.fragment

    def page(self) -> str:
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title></head>\n"
            f'<body style="margin:0">\n{self.fragment}\n</body></html>\n'
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.page(), encoding="utf-8")
        return path


def _display(token: str) -> str:
    """Visible form of a token: control characters (newline, tab, ...) escaped, spaces kept."""
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
    out = []
    for ch in str(token):
        if ch in named:
            out.append(named[ch])
        elif unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _text(s) -> str:
    return html.escape(_display(s), quote=True)


def _rgb(rgb) -> str:
    return "rgb({},{},{})".format(*rgb)


def _mix(rgb: tuple[int, int, int], t: float) -> str:
    """`t` of the way from white to `rgb`."""
    return _rgb(round(w + (c - w) * t) for w, c in zip(WHITE, rgb))


_CSS = f"""
.mjv {{ font: 12px/1.25 sans-serif; color: #222; background: #fff; padding: {PAD}px;
  display: inline-block; max-width: 100%; overflow: auto; box-sizing: border-box; }}
.mjv * {{ box-sizing: border-box; margin: 0; }}
.mjv-title {{ height: {TITLE_H}px; line-height: {TITLE_H}px; font-weight: bold;
  white-space: pre; overflow: hidden; text-overflow: ellipsis; }}
.mjv-bar {{ height: {BAR_H}px; display: flex; gap: 4px; align-items: center; overflow-x: auto;
  white-space: nowrap; }}
.mjv-head {{ height: 24px; padding: 0 6px; font: inherit; border: 1px solid #888;
  background: #f4f4f4; border-radius: 3px; cursor: pointer; }}
.mjv-head.mjv-on {{ background: {_rgb(BLUE)}; color: #fff; border-color: {_rgb(BLUE)}; }}
.mjv-grid {{ display: grid; }}
.mjv-row, .mjv-col {{ white-space: pre; overflow: hidden; text-overflow: ellipsis;
  font-family: monospace; }}
.mjv-row {{ text-align: right; padding-right: 4px; }}
.mjv-col {{ writing-mode: vertical-rl; transform: rotate(180deg); padding-top: 4px; }}
.mjv-hl {{ outline: 1px solid #000; outline-offset: -1px; }}
.mjv-info {{ min-height: 18px; margin-top: 4px; font-family: monospace; white-space: pre; }}
.mjv-tokens {{ margin-top: 4px; max-width: 60em; line-height: 1.9; }}
.mjv-tok {{ font-family: monospace; white-space: pre; border: 1px solid #ccc; padding: 0 1px;
  cursor: pointer; }}
.mjv-tok.mjv-q {{ outline: 2px solid #000; }}
.mjv-scale {{ margin-top: 6px; display: flex; gap: 6px; align-items: center; }}
.mjv-scale span:nth-child(2) {{ width: 120px; height: 10px; display: inline-block; }}
"""


def _grid_open(n_rows: int, n_cols: int, cell_px: int, rows, cols) -> list[str]:
    """Opening of a CSS grid: corner, column labels, then per row a label and (later) cells."""
    style = (
        f"grid-template-columns: {ROW_LABEL_W}px repeat({n_cols}, {cell_px}px); "
        f"grid-template-rows: {COL_LABEL_H}px repeat({n_rows}, {cell_px}px)"
    )
    out = [f'<div class="mjv-grid" style="{style}"><div></div>']
    out += [f'<div class="mjv-col" title="{_text(c)}">{_text(c)}</div>' for c in cols]
    return out


def _row_label(label, cell_px: int) -> str:
    return f'<div class="mjv-row" style="line-height:{cell_px}px" title="{_text(label)}">{_text(label)}</div>'


def _labels(labels, n: int, what: str) -> list[str]:
    if labels is None:
        return [str(i) for i in range(n)]
    labels = [str(t) for t in labels]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} {what} labels for {n} {what}s")
    return labels


def heatmap(
    grid,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    *,
    title: str = "",
    center: bool = True,
    cell_px: int = CELL,
) -> HTML:
    """A labelled grid as HTML (no script), each cell's value in its tooltip.

    Args:
      grid: `[rows, cols]` array, row 0 drawn on top.
      row_labels, col_labels: one per row / column (indices when None); tokens are escaped.
      center: diverging colours centred on 0 (blue < 0 < red); else white (min) to blue (max).
      cell_px: side of a cell in pixels.

    Returns:
      An `HTML` value (`_repr_html_`, `.save(path)`).
    """
    g = np.asarray(grid, np.float64)
    if g.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D grid, got shape {g.shape}")
    rows = _labels(row_labels, g.shape[0], "row")
    cols = _labels(col_labels, g.shape[1], "column")
    finite = g[np.isfinite(g)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    lim = max(abs(lo), abs(hi))

    def colour(v: float) -> str:
        if not np.isfinite(v):
            return _rgb(NAN)
        if center:
            return _mix(RED if v > 0 else BLUE, abs(v) / lim if lim else 0.0)
        return _mix(BLUE, (v - lo) / (hi - lo) if hi > lo else 0.0)

    out = [
        f"<style>{_CSS}</style>",
        '<div class="mjv">',
        f'<div class="mjv-title">{_text(title)}</div>',
    ]
    out += _grid_open(g.shape[0], g.shape[1], cell_px, rows, cols)
    for r, row in zip(rows, g):
        out.append(_row_label(r, cell_px))
        out += [
            f'<div style="background:{colour(v)}" title="{_text(r)} / {_text(c)}: {v:.4g}"></div>'
            for c, v in zip(cols, row)
        ]
    out.append("</div>")
    if center:
        ends = (
            f"{-lim:.3g}",
            f"linear-gradient(to right, {_rgb(BLUE)}, #fff, {_rgb(RED)})",
            f"{lim:.3g}",
        )
    else:
        ends = (f"{lo:.3g}", f"linear-gradient(to right, #fff, {_rgb(BLUE)})", f"{hi:.3g}")
    out.append(
        f'<div class="mjv-scale"><span>{ends[0]}</span>'
        f'<span style="background:{ends[1]}"></span><span>{ends[2]}</span></div></div>'
    )
    return HTML("\n".join(out), title or "heatmap")


# The view's behaviour: colour the grid for one head, show a query's attention over the
# prompt. Only numbers reach the script; all text is already in the page, escaped.
_JS = """
(function () {
  const root = document.getElementById(%(id)s);
  const P = %(data)s;
  const nq = P[0].length, nk = P[0][0].length, off = nk - nq;
  const cells = root.querySelectorAll(".mjv-cell");
  const rows = root.querySelectorAll(".mjv-row");
  const heads = root.querySelectorAll(".mjv-head");
  const toks = root.querySelectorAll(".mjv-tok");
  const info = root.querySelector(".mjv-info");
  let head = %(head)d, locked = -1;
  function colour(v) {
    if (!isFinite(v)) return %(nan)s;
    const t = Math.min(Math.max(v, 0), 1), w = 255, c = %(blue)s;
    return "rgb(" + c.map(x => Math.round(w + (x - w) * t)).join(",") + ")";
  }
  function query(q) {
    rows.forEach((r, i) => r.classList.toggle("mjv-hl", i === q));
    toks.forEach((t, k) => {
      const v = q < 0 ? 0 : P[head][q][k];
      t.style.background = q < 0 ? "" : colour(v);
      t.style.color = v > 0.6 ? "#fff" : "";
      t.classList.toggle("mjv-q", k === q + off && q >= 0);
    });
  }
  function show(h) {
    head = h;
    for (let q = 0; q < nq; q++)
      for (let k = 0; k < nk; k++) cells[q * nk + k].style.background = colour(P[h][q][k]);
    heads.forEach((b, i) => b.classList.toggle("mjv-on", i === h));
    query(locked);
  }
  heads.forEach((b, i) => b.addEventListener("click", () => show(i)));
  cells.forEach((c, i) => {
    const q = Math.floor(i / nk), k = i %% nk;
    c.addEventListener("mouseenter", () => {
      info.textContent = heads[head].textContent + "  " + rows[q].textContent + " -> " +
        toks[k].textContent + ": " + P[head][q][k].toFixed(3);
      if (locked < 0) query(q);
    });
    c.addEventListener("click", () => { locked = locked === q ? -1 : q; query(q); });
  });
  toks.forEach((t, k) => {
    const q = k - off;
    if (q < 0) return;
    t.addEventListener("mouseenter", () => { if (locked < 0) query(q); });
    t.addEventListener("click", () => { locked = locked === q ? -1 : q; query(q); });
  });
  root.querySelector(".mjv-grid").addEventListener("mouseleave", () => query(locked));
  show(head);
})();
"""


def attention_patterns(
    tokens: Sequence[str],
    pattern,
    head_names: Sequence[str] | None = None,
    *,
    head: int = 0,
    title: str = "",
    cell_px: int = CELL,
) -> HTML:
    """Attention of each head, one head at a time: queries down, keys across.

    Args:
      tokens: one string per key position (`model.tokenizer` decodes them); the queries
        are the last `q_pos` of them, as when decoding with a cache.
      pattern: `[n_heads, q_pos, k_pos]` probabilities, e.g. one batch row of the site
        `blocks.{l}.attn.hook_pattern` (which holds `[batch, n_heads, q_pos, k_pos]`).
      head_names: button labels; `H0, H1, ...` when None.
      head: the head shown first.
      cell_px: side of a cell in pixels.

    Returns:
      An `HTML` value (`_repr_html_`, `.save(path)`).
    """
    p = np.asarray(pattern, np.float64)
    if p.ndim != 3:
        raise ValueError(
            f"attention_patterns needs [n_heads, q_pos, k_pos], got shape {p.shape} "
            "(index the batch first: pattern[0])"
        )
    n, nq, nk = p.shape
    tokens = [str(t) for t in tokens]
    if len(tokens) != nk:
        raise ValueError(f"{len(tokens)} tokens for {nk} key positions (pattern {p.shape})")
    if nq > nk:
        raise ValueError(f"more queries than keys in pattern {p.shape}")
    names = [f"H{h}" for h in range(n)] if head_names is None else [str(h) for h in head_names]
    if len(names) != n:
        raise ValueError(f"{len(names)} head names for {n} heads")
    if not 0 <= head < n:
        raise ValueError(f"head {head} out of range for {n} heads")
    vid = f"mjv-{uuid.uuid4().hex[:12]}"
    out = [
        f"<style>{_CSS}</style>",
        f'<div class="mjv" id="{vid}">',
        f'<div class="mjv-title">{_text(title)}</div>',
        '<div class="mjv-bar">',
        *[f'<button type="button" class="mjv-head">{_text(h)}</button>' for h in names],
        "</div>",
    ]
    out += _grid_open(nq, nk, cell_px, tokens[nk - nq :], tokens)
    for r in tokens[nk - nq :]:
        out.append(_row_label(r, cell_px))
        out.append('<div class="mjv-cell"></div>' * nk)
    out += [
        "</div>",
        '<div class="mjv-info">hover a cell or a token; click to keep a query</div>',
        '<div class="mjv-tokens">',
        " ".join(f'<span class="mjv-tok">{_text(t)}</span>' for t in tokens),
        "</div>",
        "<noscript>this view needs JavaScript</noscript>",
    ]
    data = json.dumps(np.round(p, 4).tolist())
    js = _JS % {
        "id": json.dumps(vid),
        "data": data,
        "head": head,
        "nan": json.dumps(_rgb(NAN)),
        "blue": json.dumps(list(BLUE)),
    }
    out += [f"<script>{js}</script>", "</div>"]
    return HTML("\n".join(out), title or "attention patterns")
