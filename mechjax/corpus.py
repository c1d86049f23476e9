"""An offline English corpus: real prose that ships with every Python, no download.

Neuron studies, probes and SAEs need a stream of natural text; mechjax builds one from
what a standard Python install already holds, so it works offline and gives the same
text, in the same order, on every machine with the same Python version.

Sources (`documents(sources=...)`; sizes measured on CPython 3.11, after cleaning):

- `"pydoc_topics"`: `pydoc_data.topics.topics`, the language-reference topics that
  `help("if")` prints (79 topics, 465 K characters raw; 77 documents, 362 K characters
  once grammar and code blocks are dropped). One document per topic, in sorted order.
- `"stdlib_docstrings"`: the docstrings of a fixed list of cross-platform
  standard-library modules (`STDLIB_MODULES`, 95 modules: the module's docstring, then
  each public class, its public methods and each public function defined in the module,
  in sorted name order), one document per module (93 documents, 468 K characters). Modules
  whose members depend on the operating system (`os`, `sys`, `subprocess`, ...) are left
  out; a module that fails to import is skipped. Under `python -OO` docstrings are
  stripped and this source is empty.
- `"licenses"` (opt-in, OS-dependent): the licence texts under
  `/usr/share/common-licenses` (Debian and its derivatives; absent elsewhere), one
  document per file (14 documents, 225 K characters on one Debian system). Not in the
  default, so the default corpus is the same everywhere.

Cleaning, per paragraph (blank-line separated): rules of `*`/`=`/`-` are dropped, as are
doctest and code paragraphs (lines starting with `>>>`, or text with few letters or few
common English words); each kept paragraph's whitespace is collapsed to single spaces and
paragraphs are joined by a blank line; documents under `MIN_DOC_CHARS` are dropped.
`describe_sources()` reports the exact counts of the running Python. The default corpus,
tokenized by SmolLM2's tokenizer, is 194,629 tokens (about 0.5 s to tokenize; cached
in-process per tokenizer and document list by `tokenize_documents`).

Files: `read_documents(path)` reads a text file (one document per file, or per
blank-line-separated block with `split="paragraphs"`), a JSONL file (the `field` of each
line, default "text"), or a directory of them (`*.txt`, `*.md`, `*.jsonl`, sorted by
name, recursively); the documents go through `token_chunks` like the built-in ones.

Tokens: `token_chunks` concatenates the tokenized documents with a separator between
them (`<|endoftext|>` where the vocabulary has it, as in GPT-2 and SmolLM pretraining,
else the tokenizer's EOS) and cuts the stream into `ctx_len` rows, optionally each
starting with BOS; `unigram_counts` counts each token id over the documents.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from mechjax.errors import InputError

__all__ = [
    "DEFAULT_SOURCES",
    "SOURCES",
    "STDLIB_MODULES",
    "SourceInfo",
    "clean",
    "describe_sources",
    "documents",
    "read_documents",
    "token_chunks",
    "tokenize_documents",
    "unigram_counts",
]

DEFAULT_SOURCES = ("pydoc_topics", "stdlib_docstrings")
LICENSE_DIR = Path("/usr/share/common-licenses")
MIN_DOC_CHARS = 200

# Pure-Python or platform-independent modules with prose docstrings, sorted. A module
# whose public members change with the OS or the build (os, sys, time, subprocess,
# selectors, socket, decimal's C/Python split) is not here, so the text is the same on
# every machine of one Python version.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "base64", "bdb", "binascii", "bisect", "builtins",
    "bz2", "calendar", "cmd", "code", "codecs", "codeop", "collections", "colorsys",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "difflib",
    "dis", "doctest", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib",
    "functools", "getopt", "gettext", "glob", "graphlib", "gzip", "heapq", "hmac",
    "html", "imaplib", "inspect", "ipaddress", "itertools", "json", "keyword",
    "linecache", "logging", "lzma", "mailbox", "math", "mimetypes", "numbers",
    "operator", "optparse", "pathlib", "pdb", "pickle", "pickletools", "pkgutil",
    "plistlib", "poplib", "pprint", "queue", "quopri", "random", "re", "reprlib",
    "sched", "secrets", "shelve", "shlex", "smtplib", "statistics", "string",
    "stringprep", "struct", "tabnanny", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "trace", "traceback", "types", "typing", "unicodedata",
    "uuid", "wave", "weakref", "zipapp", "zipfile", "zipimport",
)  # fmt: skip

# Common English function words that are not Python keywords: prose has many (a fifth of
# its words), code and grammar almost none.
_ENGLISH = frozenset(
    "the a an of to that this these those be been are was were by which it its on can "
    "will would when has have than such their there they also must may should each any "
    "all at but into only other same used uses use called does do".split()
)
_RULE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")
_WORD = re.compile(r"[A-Za-z]+")
_SEPARATOR_TOKEN = "<|endoftext|>"


class SourceInfo(NamedTuple):
    """One corpus source: what it is, and its size in this Python after cleaning."""

    description: str
    documents: int
    chars: int
    portable: bool  # the same on every machine of one Python version


_DESCRIPTIONS = {
    "pydoc_topics": ("pydoc_data.topics: the language-reference topics of help()", True),
    "stdlib_docstrings": ("docstrings of the STDLIB_MODULES standard-library modules", True),
    "licenses": (f"licence texts under {LICENSE_DIR} (OS-dependent, opt-in)", False),
}
SOURCES = tuple(_DESCRIPTIONS)


# ---------------------------------------------------------------------- cleaning


def _is_prose(paragraph: str) -> bool:
    """Whether a paragraph reads as English prose rather than code, grammar or a table."""
    if paragraph.lstrip().startswith((">>>", "...", "$ ")):
        return False
    words = _WORD.findall(paragraph)
    if len(words) < 4:
        return False
    letters = sum(len(w) for w in words)
    if letters < 0.6 * len(paragraph.replace(" ", "")):
        return False
    return sum(w.lower() in _ENGLISH for w in words) >= 0.08 * len(words)


def clean(text: str) -> str:
    """`text` as prose paragraphs: rules, code and doctest paragraphs dropped, whitespace
    inside each paragraph collapsed, paragraphs joined by one blank line."""
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if not _RULE.match(ln)]
    paragraphs = re.split(r"\n\s*\n", "\n".join(lines))
    kept = [" ".join(p.split()) for p in paragraphs if _is_prose(p)]
    return "\n\n".join(p for p in kept if p)


# ---------------------------------------------------------------------- sources


def _pydoc_topics() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _stdlib_docstrings() -> list[str]:
    """The modules' docstrings from a fresh interpreter (`_stdlib_docs.py` run with
    `python -I`): in this process, libraries imported earlier may have added to or
    wrapped stdlib members, which changed the text (seen under a test suite)."""
    script = Path(__file__).with_name("_stdlib_docs.py")
    flags = [f"-{'O' * sys.flags.optimize}"] if sys.flags.optimize else []
    r = subprocess.run(
        [sys.executable, "-I", *flags, str(script), json.dumps(list(STDLIB_MODULES))],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"collecting stdlib docstrings failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def _licenses() -> list[str]:
    if not LICENSE_DIR.is_dir():
        return []
    seen: set[Path] = set()
    docs = []
    for path in sorted(LICENSE_DIR.iterdir()):
        real = path.resolve()  # GPL -> GPL-3 and the like: one copy
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        docs.append(real.read_text(encoding="utf-8", errors="replace"))
    return docs


_RAW = {
    "pydoc_topics": _pydoc_topics,
    "stdlib_docstrings": _stdlib_docstrings,
    "licenses": _licenses,
}


@functools.lru_cache(maxsize=None)
def _source(name: str) -> tuple[str, ...]:
    cleaned = (clean(d) for d in _RAW[name]())
    return tuple(d for d in cleaned if len(d) >= MIN_DOC_CHARS)


def _check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    if isinstance(sources, str):
        sources = (sources,)
    bad = [s for s in sources if s not in _RAW]
    if bad or not sources:
        what = f"unknown corpus source {bad[0]!r}" if bad else "no corpus source given"
        raise InputError(f"{what}; valid sources: {', '.join(SOURCES)}")
    return tuple(sources)


def documents(
    sources: Sequence[str] = DEFAULT_SOURCES, *, max_chars: int | None = None
) -> list[str]:
    """The cleaned documents of `sources`, in source order then each source's own order.

    `max_chars` bounds the total length: whole documents are kept while they fit, the
    next one is cut at a word boundary, the rest dropped (for small, fast corpora).
    Raises InputError for a source not in `SOURCES`.
    """
    docs = [d for s in _check_sources(sources) for d in _source(s)]
    if max_chars is None:
        return docs
    if max_chars <= 0:
        raise InputError(f"max_chars must be positive, got {max_chars}")
    out, total = [], 0
    for d in docs:
        if total + len(d) <= max_chars:
            out.append(d)
            total += len(d) + 2  # the separator between documents counts too
            continue
        cut = d[: max(max_chars - total, 0)].rsplit(" ", 1)[0]
        if cut:
            out.append(cut)
        break
    return out


TEXT_SUFFIXES = (".txt", ".md", ".jsonl")


def read_documents(
    path: str | Path, *, field: str = "text", split: str = "file", clean_text: bool = False
) -> list[str]:
    """Documents from a text file, a JSONL file or a directory of them.

    Args:
      path: a `.txt`/`.md` file (one document, or one per blank-line-separated block with
        `split="paragraphs"`), a `.jsonl` file (the string `field` of each line, empty
        lines skipped), or a directory (its `TEXT_SUFFIXES` files, recursively, by name).
      clean_text: pass each document through `clean` (drops code and rules).
    Raises InputError naming the file (and line) for a missing path, a JSONL line that
    is not JSON or lacks `field`, or a directory without text files.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if split not in ("file", "paragraphs"):
        raise InputError(f"split must be 'file' or 'paragraphs', got {split!r}")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        if not files:
            raise InputError(f"{p}: no {', '.join(TEXT_SUFFIXES)} files in this directory")
        return [
            d
            for f in files
            for d in read_documents(f, field=field, split=split, clean_text=clean_text)
        ]
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix == ".jsonl":
        docs = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{p}:{i}: not a JSON line ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise InputError(
                    f"{p}:{i}: no string field {field!r} (fields: {sorted(row) if isinstance(row, dict) else type(row).__name__})"
                )
            docs.append(row[field])
    elif split == "paragraphs":
        docs = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    else:
        docs = [text]
    docs = [clean(d) for d in docs] if clean_text else docs
    return [d for d in docs if d.strip()]


def describe_sources(sources: Sequence[str] = SOURCES) -> dict[str, SourceInfo]:
    """Each source's description, document count and characters in this Python."""
    return {
        s: SourceInfo(
            _DESCRIPTIONS[s][0], len(_source(s)), sum(map(len, _source(s))), _DESCRIPTIONS[s][1]
        )
        for s in _check_sources(sources)
    }


# ---------------------------------------------------------------------- tokens


def _tok(tokenizer_or_model: Any) -> Any:
    tok = getattr(tokenizer_or_model, "tokenizer", tokenizer_or_model)
    if tok is None or not hasattr(tok, "encode"):
        raise InputError(
            "expected a model with a tokenizer or a tokenizer (with .encode); this model "
            "has none (built from a config, not loaded)"
        )
    return tok


# Tokenized documents per tokenizer object: (tokenizer, docs) -> per-document id arrays.
_ENCODED: dict[tuple[int, int], tuple[Any, tuple[str, ...], list[np.ndarray]]] = {}


def tokenize_documents(tokenizer_or_model: Any, docs: Sequence[str]) -> list[np.ndarray]:
    """Each document's token ids (int32, no BOS/EOS), cached in-process per tokenizer
    and document list, so repeated chunking and counting tokenize once."""
    tok = _tok(tokenizer_or_model)
    docs = tuple(docs)
    key = (id(tok), hash(docs))
    hit = _ENCODED.get(key)
    if hit is not None and hit[0] is tok and hit[1] == docs:
        return hit[2]
    backend = getattr(tok, "backend", None)
    if backend is not None and hasattr(backend, "encode"):  # a mechjax Tokenizer
        ids = [backend.encode(d, add_special_tokens=False).ids for d in docs]
    else:
        ids = [tok.encode(d, add_bos=False) for d in docs]
    encoded = [np.asarray(i, np.int32) for i in ids]
    if len(_ENCODED) >= 8:
        _ENCODED.pop(next(iter(_ENCODED)))
    _ENCODED[key] = (tok, docs, encoded)
    return encoded


def _separator(tok: Any) -> int | None:
    sep = tok.token_to_id(_SEPARATOR_TOKEN) if hasattr(tok, "token_to_id") else None
    return sep if sep is not None else getattr(tok, "eos_token_id", None)


def token_chunks(
    tokenizer_or_model: Any,
    docs: Sequence[str] | None = None,
    *,
    ctx_len: int,
    n_chunks: int | None = None,
    prepend_bos: bool | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    """int32 [n_chunks, ctx_len] rows cut from the tokenized corpus.

    The documents (default: `documents()`) are tokenized, joined with a separator token
    (`<|endoftext|>` if in the vocabulary, else EOS, else none) and cut into consecutive
    pieces; with `prepend_bos` (None: the tokenizer's convention, Gemma yes, SmolLM2 no)
    each row is BOS plus `ctx_len - 1` corpus tokens. Rows are shuffled by `seed` (None:
    corpus order) and the first `n_chunks` kept (None: all). Raises InputError when the
    corpus has fewer rows than asked.
    """
    tok = _tok(tokenizer_or_model)
    docs = documents() if docs is None else docs
    if ctx_len < 1:
        raise InputError(f"ctx_len must be at least 1, got {ctx_len}")
    add_bos = bool(getattr(tok, "add_bos_default", False)) if prepend_bos is None else prepend_bos
    bos = getattr(tok, "bos_token_id", None)
    if add_bos and bos is None:
        raise InputError("prepend_bos=True but this tokenizer has no BOS token")
    body = ctx_len - 1 if add_bos else ctx_len
    if body < 1:
        raise InputError(f"ctx_len {ctx_len} leaves no room after BOS; give at least 2")
    pieces = tokenize_documents(tok, docs)
    sep = _separator(tok)
    if sep is not None and pieces:
        sep_arr = np.asarray([sep], np.int32)
        pieces = [x for p in pieces for x in (p, sep_arr)][:-1]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    available = stream.size // body
    if n_chunks is not None and n_chunks < 1:
        raise InputError(f"n_chunks must be at least 1, got {n_chunks}")
    want = available if n_chunks is None else n_chunks
    if want > available or available == 0:
        raise InputError(
            f"the corpus ({len(docs)} documents, {stream.size} tokens) gives {available} "
            f"chunks of {body} corpus tokens (ctx_len {ctx_len}), fewer than the "
            f"{max(want, 1)} asked: lower n_chunks or ctx_len, or add sources "
            f"(valid: {', '.join(SOURCES)})"
        )
    rows = stream[: available * body].reshape(available, body)
    order = (
        np.arange(available) if seed is None else np.random.default_rng(seed).permutation(available)
    )
    rows = rows[order[:want]]
    if add_bos:
        rows = np.concatenate([np.full((want, 1), bos, np.int32), rows], axis=1)
    return np.ascontiguousarray(rows, dtype=np.int32)


def unigram_counts(
    tokenizer_or_model: Any, docs: Sequence[str] | None = None, *, d_vocab: int
) -> np.ndarray:
    """int64 [d_vocab]: how often each token id occurs in the tokenized documents
    (default: `documents()`), without BOS or separators. Raises InputError if an id is
    outside [0, d_vocab)."""
    docs = documents() if docs is None else docs
    pieces = tokenize_documents(tokenizer_or_model, docs)
    ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    if ids.size and int(ids.max()) >= d_vocab:
        raise InputError(
            f"token id {int(ids.max())} is outside the vocabulary [0, {d_vocab}): is "
            "d_vocab the model's (model.config.d_vocab)?"
        )
    return np.bincount(ids, minlength=d_vocab).astype(np.int64)
