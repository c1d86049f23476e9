"""Task generators on a small word-level tokenizer: shapes, answers, reproducibility."""

import re

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from mechjax import tasks
from mechjax.io.tokenizer import Tokenizer
from mechjax.tasks.arithmetic import _calc
from mechjax.tasks.greater_than import NOUNS
from mechjax.tasks.ioi import NAMES, OBJECTS, PLACES
from mechjax.tasks.retrieval import _PACKAGED_DATA


@pytest.fixture(scope="module")
def tok():
    words = set()
    for t in tasks.BABA_TEMPLATES:
        words |= set(t.replace(",", " ,").replace(".", " .").split())
    words |= set(NAMES[:20]) | set(PLACES) | set(OBJECTS)
    words |= {str(i) for i in range(301)} | {
        "Q:",
        "A:",
        "?",
        "+",
        "=",
        "The",
        "capital",
        "of",
        "is",
        "Paris",
        "France",
        "Rome",
        "Italy",
    }
    words |= set(" ".join(sum(tasks.ARITHMETIC_TEMPLATES.values(), ())).replace("?", " ?").split())
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>"] + sorted(words))}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
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
            assert _calc(x, op, y) == _calc(xa, op, ya)


def test_multi_token_answer_raises(tok):
    with pytest.raises(tasks.TaskError, match="2 tokens"):
        tasks.from_pair(
            tok, "The capital of France is", "The capital of Italy is", " Paris Rome", " Rome"
        )


def test_induction():
    b = tasks.induction(50, n=3, half=5, bos=1)
    assert b.clean.shape == (3, 10)
    np.testing.assert_array_equal(b.clean[:, 1:5], b.clean[:, 6:10])
    np.testing.assert_array_equal(b.answers, b.clean[:, 5])


def _word_tokenizer(texts, extra=()):
    """Word-level tokenizer whose vocabulary is every word of `texts` (plus `extra`)."""
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    words = set(extra)
    for t in texts:
        words |= {w for w, _ in pre.pre_tokenize_str(t)}
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>"] + sorted(words))}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    return Tokenizer(backend, bos_token="<s>", add_bos=True)


@pytest.fixture(scope="module")
def entity_tok():
    import json

    entities = json.loads((_PACKAGED_DATA / "entity_dict.json").read_text())
    names = [n for pair in sum(entities.values(), []) for n in pair]
    return _word_tokenizer(list(tasks.ENTITY_TEMPLATES) + names, [str(i) for i in range(10)])


def test_number_retrieval_asks_for_the_first_entity(entity_tok):
    """Type 11 pairs: the clean question asks for the entity counted first (answer x),
    the corrupted one for the second (answer y); only the question's entity differs."""
    import re

    tok = entity_tok
    b = tasks.number_retrieval(tok, 8, seed=3)
    assert b.clean.shape == b.corrupted.shape and len(b) == 8
    for i, (clean, corr) in enumerate(zip(b.clean_text, b.corrupted_text)):
        m = re.search(
            r" (\d) ([A-Za-z ]+?) and (\d) ([A-Za-z ]+?)\. How many ([A-Za-z ]+?) ", clean
        )
        x, e1, y, e2, asked = m.groups()
        assert asked == e1 and x != y
        assert (
            f"How many {e2} " in corr
            and corr.replace(f"How many {e2} ", f"How many {e1} ") == clean
        )
        assert tok.decode([b.answers[i]]).strip() == x and tok.decode([b.wrongs[i]]).strip() == y
        assert tok.decode([b.clean[i, b.positions["op1"][i]]]) == x
        assert tok.decode([b.clean[i, b.positions["op2"][i]]]) == y
        assert b.positions["end"][i] == b.clean.shape[1] - 1
        differ = np.flatnonzero(b.clean[i] != b.corrupted[i])
        assert differ.size >= 1 and differ.min() > b.positions["op2"][i]  # only the question
    np.testing.assert_array_equal(b.clean, tasks.number_retrieval(tok, 8, seed=3).clean)
    assert not np.array_equal(b.clean, tasks.number_retrieval(tok, 8, seed=4).clean)


def test_number_retrieval_reads_another_entity_dictionary(entity_tok, tmp_path, monkeypatch):
    import json

    (tmp_path / "entity_dict.json").write_text(
        json.dumps({"a": [["Carrot", "Carrots"]], "b": [["Apple", "Apples"]]})
    )
    b = tasks.number_retrieval(entity_tok, 4, seed=0, data_dir=tmp_path)
    for text in b.clean_text + b.corrupted_text:
        assert set(re.findall(r"[A-Z][a-z]+", text)) - {
            "Q",
            "A",
            "I",
            "How",
            "Paul",
            "Alice",
            "Mark",
            "Jasmin",
            "Sarah",
        } <= {"Carrot", "Carrots", "Apple", "Apples"}
    monkeypatch.setenv("MECHJAX_LM_ARITHMETIC", str(tmp_path / "missing"))
    with pytest.raises(tasks.TaskError, match="no entity_dict.json in .*missing"):
        tasks.number_retrieval(entity_tok, 4)
    (tmp_path / "entity_dict.json").write_text(json.dumps({"a": [["Carrot", "Carrots"]]}))
    with pytest.raises(tasks.TaskError, match="at least two classes"):
        tasks.number_retrieval(entity_tok, 4, data_dir=tmp_path)


def test_factual_recall(tok):
    b = tasks.factual_recall(tok, 4, seed=0)  # the fixture knows France/Paris, Italy/Rome
    capital = {"France": "Paris", "Italy": "Rome"}
    for i, (clean, corr) in enumerate(zip(b.clean_text, b.corrupted_text)):
        c1, c2 = clean.split()[-2], corr.split()[-2]
        assert c1 != c2
        assert tok.decode([b.answers[i]]).strip() == capital[c1]
        assert tok.decode([b.wrongs[i]]).strip() == capital[c2]
        assert tok.decode([b.clean[i, b.positions["subject"][i]]]) == c1
    with pytest.raises(tasks.TaskError, match="fewer than two single-token capitals"):
        tasks.factual_recall(_word_tokenizer(["The capital of France is Paris"]), 2)


def test_greater_than_years_and_digit_split_error():
    years = [f"{c}{y:02d}" for c in range(11, 18) for y in range(100)]
    texts = [f"The {noun} lasted from the year to the" for noun in NOUNS]
    tok = _word_tokenizer(
        texts, years + [f"{y:02d}" for y in range(100)] + [str(c) for c in range(11, 18)]
    )
    b = tasks.greater_than(tok, 6, seed=1)
    for i, text in enumerate(b.clean_text):
        yy = int(text.split()[-5][-2:])
        assert b.info["years"][i] == yy
        assert tok.decode([b.answers[i]]) == f"{yy + 1:02d}"
        assert tok.decode([b.wrongs[i]]) == f"{yy - 1:02d}"
        assert b.corrupted_text[i].split()[-5].endswith("01")
    with pytest.raises(tasks.TaskError):
        tasks.greater_than(_word_tokenizer(texts, [str(d) for d in range(10)]), 2)


def test_unknown_word_answer_raises(tok):
    """A word the vocabulary lacks encodes to one <unk> token: not a valid answer."""
    with pytest.raises(tasks.TaskError, match="decodes to '<unk>'"):
        tasks.single_token(tok, " Berlin")
    assert tok.decode([tasks.single_token(tok, " Paris")]) == "Paris"


def test_few_shot_prefixes_are_solved_examples_and_positions_follow(tok, entity_tok):
    b = tasks.arithmetic(tok, 4, seed=0, op="+", template=0, n_shots=2)
    plain = tasks.arithmetic(tok, 4, seed=0, op="+", template=0)
    for i, (text, bare) in enumerate(zip(b.clean_text, plain.clean_text)):
        *shots, query = text.split("\n")
        assert len(shots) == 2 and query.strip() == bare.strip()  # the same pairs, prefixed
        for shot in shots:
            x, y, r = (int(v) for v in re.findall(r"\d+", shot))
            assert x + y == r and shot.startswith("Q: How much is")
        assert tok.decode([b.clean[i, b.positions["op1"][i]]]) == re.findall(r"\d+", query)[0]
        assert tok.decode([b.answers[i]]).strip() == str(
            sum(int(v) for v in re.findall(r"\d+", query))
        )
    r = tasks.number_retrieval(entity_tok, 4, seed=1, n_shots=3)
    for i, text in enumerate(r.clean_text):
        *shots, query = text.split("\n")
        assert len(shots) == 3
        for shot in shots:
            m = re.search(
                r" (\d) ([A-Za-z ]+?) and \d ([A-Za-z ]+?)\. How many ([A-Za-z ]+?) .* (\d)$", shot
            )
            assert m.group(2) == m.group(4) and m.group(1) == m.group(5)  # asks for, answers x
        x = re.findall(r"\d", query)[0]
        assert entity_tok.decode([r.clean[i, r.positions["op1"][i]]]) == x
    assert r.info["n_shots"] == 3
    with pytest.raises(tasks.TaskError, match="n_shots must be an integer >= 0"):
        tasks.number_retrieval(entity_tok, 2, n_shots=-1)


def test_rows_selects_pairs_with_their_positions_texts_and_info():
    years = [f"{c}{y:02d}" for c in range(11, 18) for y in range(100)]
    texts = [f"The {noun} lasted from the year to the" for noun in NOUNS]
    tok = _word_tokenizer(
        texts, years + [f"{y:02d}" for y in range(100)] + [str(c) for c in range(11, 18)]
    )
    b = tasks.greater_than(tok, 6, seed=2)
    part = b.rows(slice(1, 5, 2))
    assert len(part) == 2 and part.clean_text == (b.clean_text[1], b.clean_text[3])
    np.testing.assert_array_equal(part.clean, b.clean[[1, 3]])
    np.testing.assert_array_equal(part.wrongs, b.wrongs[[1, 3]])
    np.testing.assert_array_equal(part.positions["year"], b.positions["year"][[1, 3]])
    np.testing.assert_array_equal(part.info["years"], b.info["years"][[1, 3]])
    np.testing.assert_array_equal(b.rows(np.asarray([4])).corrupted, b.corrupted[4:5])
