"""Reading and writing coreference annotations in the CoNLL-2012 format.

A CoNLL-2012 file holds documents between `#begin document NAME` and `#end document`
lines; every other non-blank line is one token, its columns separated by whitespace, the
last column the coreference annotation: `-` (none), `(7` (a mention of entity 7 opens at
this token), `7)` (it closes here), `(7)` (a one-token mention), several joined with `|`
or written back to back (`(1(3`, `3)1)`). Blank lines end sentences; token indices count
every token of the document, sentences included, from 0.

`read_conll` returns each document's entities as lists of `(start, end)` token spans
(both inclusive), in the order the official reference scorer
(conll/reference-coreference-scorers, `CorScorer.pm`) builds them, because its removal of
repeated response mentions keeps the first occurrence in that order:

- entities are numbered by the first time their id is seen; within a line the one-token
  mentions `(n)` are read first, then the openings `(n` left to right, then the closings
  `n)` left to right;
- a mention joins its entity when it closes (a one-token mention at once); an opening is
  matched with the latest unmatched opening of the same id (nesting works);
- "(n+m)" (split antecedents) is dropped, as the reference scorer does; a `_` column means
  no annotation.

A closing without an opening, or a mention still open at `#end document`, is an error that
names the document and the line. `write_conll` renders tokens and entities back to the
format (one sentence per list of tokens), so synthetic documents can be scored by the
reference scorer too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from mechjax.errors import InputError

__all__ = ["Document", "Mention", "read_conll", "write_conll"]

Mention = tuple[int, int]  # (first token, last token), both inclusive

_BEGIN = re.compile(r"^#\s*begin document (.*?)$")
_END = re.compile(r"#\s*end document")
_SPLIT = re.compile(r"\((\d+\+\d)\)")
_SINGLE = re.compile(r"\((\d+)\)")
_OPEN = re.compile(r"\((\d+)")
_CLOSE = re.compile(r"(\d+)\)")


class Document(NamedTuple):
    """One document: its name (the text after `#begin document`), its tokens (the column
    `word_column`, or "" when the line is shorter) and its entities as token spans."""

    name: str
    tokens: list[str]
    entities: list[list[Mention]]


def _parse_cell(cell: str, line: int, ids: dict[str, int], entities, opened) -> None:
    """Add the mentions of one annotation cell (`line` is the token index)."""

    def index(label: str) -> int:
        if label not in ids:
            ids[label] = len(ids)
            entities.append([])
            opened.append([])
        return ids[label]

    cell = _SPLIT.sub("", cell)
    for m in _SINGLE.finditer(cell):
        entities[index(m.group(1))].append((line, line))
    cell = _SINGLE.sub("", cell)
    for m in _OPEN.finditer(cell):
        opened[index(m.group(1))].append(line)
    cell = _OPEN.sub("", cell)
    for m in _CLOSE.finditer(cell):
        e = index(m.group(1))
        if not opened[e]:
            raise ValueError(f"mention of entity {m.group(1)} closes at token {line} unopened")
        entities[e].append((opened[e].pop(), line))


def _lines(source: str | Path | Iterable[str]) -> list[str]:
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        if not path.exists():
            raise InputError(f"no CoNLL file at {path}")
        return path.read_text().splitlines()
    if isinstance(source, str):
        return source.splitlines()
    return [str(s).rstrip("\n") for s in source]


def read_conll(source: str | Path | Iterable[str], *, word_column: int = 3) -> dict[str, Document]:
    """Every document of a CoNLL-2012 file (a path, the text itself, or its lines).

    Args:
      source: a file path, a string holding the file's text (it has a newline), or lines.
      word_column: which column holds the token's text (3 in CoNLL-2012; a line with fewer
        columns gets "").
    Returns:
      `{name: Document}` in file order; `name` is the text after `#begin document`
      (e.g. "(bc/cctv/00/cctv_0001); part 000").
    """
    docs: dict[str, Document] = {}
    current: Document | None = None
    ids: dict[str, int] = {}
    opened: list[list[int]] = []
    for number, raw in enumerate(_lines(source), 1):
        line = raw.rstrip("\r")
        begin = _BEGIN.match(line)
        if current is None:
            if begin:
                current, ids, opened = Document(begin.group(1), [], []), {}, []
            continue
        if not line.strip():
            continue
        if _END.search(line):
            open_ids = [label for label, e in ids.items() if opened[e]]
            if open_ids:
                raise InputError(
                    f"document {current.name!r}: mentions of entities {open_ids} are still open "
                    f"at '#end document' (line {number})"
                )
            if current.name in docs:
                raise InputError(f"document {current.name!r} appears twice (line {number})")
            docs[current.name] = current
            current = None
            continue
        cols = line.split()
        current.tokens.append(cols[word_column] if len(cols) > word_column else "")
        if cols[-1] != "_":
            try:
                _parse_cell(cols[-1], len(current.tokens) - 1, ids, current.entities, opened)
            except ValueError as e:
                raise InputError(f"document {current.name!r}, line {number}: {e}") from None
    if current is not None:
        raise InputError(f"document {current.name!r} has no '#end document' line")
    return docs


def write_conll(
    name: str,
    sentences: Sequence[Sequence[str]],
    entities: Sequence[Sequence[Mention]],
    *,
    part: int = 0,
) -> str:
    """The CoNLL-2012 text of one document (columns: document, part, token index within
    the sentence, word, coreference), entity i written with id i.

    Args:
      name: the document name; the header reads `#begin document (name); part 000`.
      sentences: the tokens, one list per sentence; token indices of `entities` count
        across sentences.
      entities: token spans `(start, end)`, inclusive, one list per entity.
    """
    n = sum(len(s) for s in sentences)
    cells: list[list[str]] = [[] for _ in range(n)]
    spans = [(s, e, i) for i, ent in enumerate(entities) for s, e in ent]
    for s, e, i in spans:
        if not 0 <= s <= e < n:
            raise InputError(f"entity {i}: mention {(s, e)} is outside the {n} tokens")
    # openings of longer mentions first, closings of shorter ones first: proper nesting
    for s, e, i in sorted(spans, key=lambda t: (t[0], -t[1])):
        cells[s].append(f"({i})" if s == e else f"({i}")
    for s, e, i in sorted(spans, key=lambda t: (t[1], -t[0])):
        if s != e:
            cells[e].append(f"{i})")
    lines = [f"#begin document ({name}); part {part:03d}"]
    k = 0
    for sent in sentences:
        for j, word in enumerate(sent):
            lines.append(f"{name}\t{part}\t{j}\t{word}\t{'|'.join(cells[k]) or '-'}")
            k += 1
        lines.append("")
    lines.append("#end document")
    return "\n".join(lines) + "\n"
