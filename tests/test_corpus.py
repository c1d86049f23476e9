"""The offline corpus: deterministic documents, prose cleaning, exact token chunks and
counts (a word-level tokenizer whose ids are known), and the real SmolLM2 tokenizer."""

import hashlib
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import tokenizers

import mechjax as mj
from mechjax import corpus
from mechjax.errors import InputError
from mechjax.io.tokenizer import Tokenizer

WORDS = "a b c d e f g h".split()


def _word_tokenizer(add_bos: bool = False) -> Tokenizer:
    """Ids: <unk> 0, <bos> 1, <eos> 2, then a..h as 3..10; split on whitespace."""
    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend, bos_token="<bos>", eos_token="<eos>", add_bos=add_bos)


def _ids(text: str) -> list[int]:
    return [WORDS.index(w) + 3 for w in text.split()]


def _digest(docs) -> str:
    return hashlib.sha256("\x00".join(docs).encode()).hexdigest()


def test_default_documents_are_cleaned_prose_and_the_same_in_a_fresh_process():
    docs = corpus.documents()
    info = corpus.describe_sources(corpus.DEFAULT_SOURCES)
    assert len(docs) == sum(i.documents for i in info.values()) > 100
    assert sum(map(len, docs)) == sum(i.chars for i in info.values()) > 500_000
    assert all(len(d) >= corpus.MIN_DOC_CHARS for d in docs)
    for d in docs:
        for p in d.split("\n\n"):
            assert p and p == " ".join(p.split()), p[:80]  # collapsed whitespace
            assert not p.startswith(">>>")
    assert any('The "if" statement is used for conditional execution' in d for d in docs)
    # another process with another hash seed gives the same text in the same order, even
    # after importing libraries that add to stdlib modules (torch and transformers changed
    # the text by 925 characters when the docstrings were read in-process)
    code = (
        "import hashlib, torch, transformers; from mechjax import corpus; "
        "print(hashlib.sha256('\\x00'.join(corpus.documents()).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _digest(docs)


def test_clean_drops_rules_code_and_doctests_and_keeps_prose():
    text = (
        "The Title\n*********\n\n"
        "This paragraph  is\n   English prose that the cleaner should keep in the corpus.\n\n"
        '   if_stmt ::= "if" expr ":" suite\n               ("elif" expr ":" suite)*\n\n'
        ">>> print(1 + 2)\n3\n\n"
        "x = {k: v for k, v in d.items()}\n\n"
        "A second paragraph of text, which is also written in plain English words."
    )
    assert corpus.clean(text) == (
        "This paragraph is English prose that the cleaner should keep in the corpus.\n\n"
        "A second paragraph of text, which is also written in plain English words."
    )


def test_bad_source_names_the_valid_ones_and_licenses_are_opt_in():
    with pytest.raises(InputError, match="'wikipedia'.*pydoc_topics, stdlib_docstrings, licenses"):
        corpus.documents(("wikipedia",))
    assert "licenses" not in corpus.DEFAULT_SOURCES
    lic = corpus.documents(("licenses",))
    if corpus.LICENSE_DIR.is_dir():
        assert lic and any("GNU GENERAL PUBLIC LICENSE" in d.upper() for d in lic)
        assert not set(lic) & set(corpus.documents())
    else:
        assert lic == []


def test_max_chars_keeps_a_prefix_of_the_corpus_within_the_bound():
    full = corpus.documents(("pydoc_topics",))
    small = corpus.documents(("pydoc_topics",), max_chars=5000)
    assert sum(map(len, small)) <= 5000 and len(small) >= 2
    assert small[:-1] == full[: len(small) - 1]
    assert full[len(small) - 1].startswith(small[-1])
    with pytest.raises(InputError, match="max_chars"):
        corpus.documents(max_chars=0)


def test_token_chunks_join_documents_with_eos_and_cut_the_stream_exactly():
    tok = _word_tokenizer()
    docs = ["a b c", "d e f g", "h a"]
    stream = _ids("a b c") + [2] + _ids("d e f g") + [2] + _ids("h a")  # 11 tokens
    rows = corpus.token_chunks(tok, docs, ctx_len=3, seed=None)
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(rows, np.array(stream[:9]).reshape(3, 3))
    with_bos = corpus.token_chunks(tok, docs, ctx_len=3, seed=None, prepend_bos=True)
    np.testing.assert_array_equal(with_bos[:, 0], [1] * 5)
    np.testing.assert_array_equal(with_bos[:, 1:], np.array(stream[:10]).reshape(5, 2))
    # the tokenizer's own convention decides when prepend_bos is None
    conv = corpus.token_chunks(_word_tokenizer(add_bos=True), docs, ctx_len=3, seed=None)
    np.testing.assert_array_equal(conv, with_bos)


def test_token_chunks_shuffle_by_seed_and_refuse_more_chunks_than_the_corpus_has():
    tok = _word_tokenizer()
    docs = [" ".join(WORDS[i % 8] for i in range(j, j + 30)) for j in range(8)]
    ordered = corpus.token_chunks(tok, docs, ctx_len=4, seed=None)
    a = corpus.token_chunks(tok, docs, ctx_len=4, seed=0)
    b = corpus.token_chunks(tok, docs, ctx_len=4, seed=0)
    c = corpus.token_chunks(tok, docs, ctx_len=4, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ordered) and not np.array_equal(a, c)
    assert sorted(map(tuple, a)) == sorted(map(tuple, ordered))
    np.testing.assert_array_equal(corpus.token_chunks(tok, docs, ctx_len=4, n_chunks=5), a[:5])
    n = ordered.shape[0]
    with pytest.raises(InputError, match=rf"gives {n} chunks.*fewer than the {n + 1} asked"):
        corpus.token_chunks(tok, docs, ctx_len=4, n_chunks=n + 1)
    with pytest.raises(InputError, match="no BOS"):
        vocab_only = Tokenizer(tok.backend, eos_token="<eos>")
        corpus.token_chunks(vocab_only, docs, ctx_len=4, prepend_bos=True)


def test_unigram_counts_count_document_tokens_only():
    tok = _word_tokenizer()
    docs = ["a b a", "c a h h"]
    counts = corpus.unigram_counts(tok, docs, d_vocab=11)
    expected = Counter(_ids("a b a") + _ids("c a h h"))
    assert counts.dtype == np.int64 and counts.shape == (11,)
    assert counts.tolist() == [expected.get(i, 0) for i in range(11)]
    with pytest.raises(InputError, match="outside the vocabulary"):
        corpus.unigram_counts(tok, docs, d_vocab=5)


@pytest.mark.slow
def test_smollm2_tokenizes_the_whole_corpus_fast_and_chunks_decode_to_corpus_text():
    model = mj.load("smollm2-135m")
    docs = corpus.documents()
    t0 = time.perf_counter()
    pieces = corpus.tokenize_documents(model, docs)
    seconds = time.perf_counter() - t0
    n_tokens = sum(len(p) for p in pieces)
    assert n_tokens > 150_000 and seconds < 10, (n_tokens, seconds)
    assert corpus.tokenize_documents(model, docs) is pieces  # cached in-process
    counts = corpus.unigram_counts(model, docs, d_vocab=model.config.d_vocab)
    assert counts.sum() == n_tokens
    rows = corpus.token_chunks(model, docs, ctx_len=32, n_chunks=20)
    assert rows.shape == (20, 32) and rows[:, 0].tolist() != [model.tokenizer.bos_token_id] * 20
    joined = "<|endoftext|>".join(docs)
    for row in rows[:5]:
        assert model.to_string(row) in joined
