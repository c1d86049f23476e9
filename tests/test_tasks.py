"""Task generators on a small word-level tokenizer: shapes, answers, reproducibility."""

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from mechjax import tasks
from mechjax.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    words = set()
    for t in tasks.BABA_TEMPLATES:
        words |= set(t.replace(",", " ,").replace(".", " .").split())
    words |= set(tasks.NAMES[:20]) | set(tasks.PLACES) | set(tasks.OBJECTS)
    words |= {str(i) for i in range(301)} | {"Q:", "A:", "?", "+", "=", "The", "capital", "of",
                                              "is", "Paris", "France", "Rome", "Italy"}
    words |= set(" ".join(sum(tasks.ARITHMETIC_TEMPLATES.values(), ())).replace("?", " ?").split())
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>"] + sorted(words))}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    return Tokenizer(backend, bos_token="<s>", add_bos=True)


def test_ioi_s2_io_flip(tok):
    b = tasks.ioi(tok, 6, seed=1)
    assert b.clean.shape == b.corrupted.shape and len(b) == 6
    for i in range(6):
        io, s1, s2 = (b.positions[k][i] for k in ("IO", "S1", "S2"))
        assert b.clean[i, io] == b.answers[i] and b.clean[i, s1] == b.wrongs[i]
        assert b.clean[i, s2] == b.wrongs[i] and b.corrupted[i, s2] == b.answers[i]
        assert (b.clean[i] != b.corrupted[i]).sum() == 1  # only S2 differs
    again = tasks.ioi(tok, 6, seed=1)
    np.testing.assert_array_equal(b.clean, again.clean)
    assert not np.array_equal(b.clean, tasks.ioi(tok, 6, seed=2).clean)


def test_ioi_abc(tok):
    b = tasks.ioi(tok, 4, seed=0, counterfactual="abc")
    for i in range(4):
        names = {b.answers[i], b.wrongs[i]}
        assert not names & {b.corrupted[i, b.positions[k][i]] for k in ("IO", "S1", "S2")}


def test_arithmetic_and_pair(tok):
    b = tasks.arithmetic(tok, 6, seed=0, template=0)
    assert b.clean.shape == b.corrupted.shape
    for i, text in enumerate(b.clean_text):
        x, y = (int(w) for w in text.replace("?", " ").split() if w.isdigit())
        assert tok.decode([b.answers[i]]).strip() == str(x + y)
        assert tok.decode([b.clean[i, b.positions["op1"][i]]]) == str(x)
    same = tasks.arithmetic(tok, 4, seed=0, template=0, intervention="same_result")
    np.testing.assert_array_equal(same.answers, same.wrongs)
    with pytest.raises(tasks.TaskError, match="same token length"):
        tasks.from_pair(tok, "The capital of France is", "The capital of is", " Paris", " Rome")


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_arithmetic_same_result_pairs_always_differ(tok, op):
    """Type 2 pairs: other operands, the same result, for every seed (a result with a
    single decomposition, like 2 = 1 + 1, draws another base instead of failing or
    pairing a prompt with itself)."""
    import re

    for seed in range(4):
        b = tasks.arithmetic(tok, 8, seed=seed, op=op, template=5, intervention="same_result")
        for clean, corr in zip(b.clean_text, b.corrupted_text):
            (x, y), (xa, ya) = ([int(v) for v in re.findall(r"\d+", t)] for t in (clean, corr))
            assert (x, y) != (xa, ya)
            assert tasks._calc(x, op, y) == tasks._calc(xa, op, ya)


def test_multi_token_answer_raises(tok):
    with pytest.raises(tasks.TaskError, match="2 tokens"):
        tasks.from_pair(tok, "The capital of France is", "The capital of Italy is",
                        " Paris Rome", " Rome")


def test_induction():
    b = tasks.induction(50, n=3, half=5, bos=1)
    assert b.clean.shape == (3, 10)
    np.testing.assert_array_equal(b.clean[:, 1:5], b.clean[:, 6:10])
    np.testing.assert_array_equal(b.answers, b.clean[:, 5])
