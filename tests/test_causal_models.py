"""High-level causal models (hand-worked interventions) and their counterfactual datasets
on SmolLM2's real tokenizer: labels re-derived from the prompt texts, positions, masks."""

import dataclasses
import re

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from mechjax.causal import causal_models as cm
from mechjax.errors import InputError
from mechjax.io.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    """SmolLM2-135M's tokenizer (the one `mj.load` gives), read from the GGUF metadata
    alone: digits one per token, no BOS by default."""
    from mechjax.io import registry
    from mechjax.io.gguf import read_gguf_metadata

    return Tokenizer.from_gguf_metadata(read_gguf_metadata(registry.resolve("smollm2-135m")))


@pytest.fixture(scope="module")
def bos_tok(tok) -> Tokenizer:
    """The same vocabulary with a BOS token prepended by default."""
    return Tokenizer(tok.backend, bos_token=tok.bos_token, eos_token=tok.eos_token, add_bos=True)


# ------------------------------------------------------------------ causal model semantics


def test_arithmetic_model_by_hand():
    m = cm.arithmetic_model()
    v = m.run({"a": 17, "b": 25})
    assert (v["ones"], v["carry"], v["tens"], v["sum"]) == (2, 1, 4, 42)
    # carry from 11 + 12 (no carry) into 17 + 25: 1 + 2 + 0 tens, ones 2
    assert m.counterfactual({"a": 17, "b": 25}, {"a": 11, "b": 12}, "carry") == 32
    # an input swap recomputes everything downstream: 3 + 25
    assert m.counterfactual({"a": 17, "b": 25}, {"a": 3, "b": 90}, "a") == 28
    assert m.counterfactual({"a": 17, "b": 25}, {"a": 3, "b": 90}, "ones") == 43
    assert m.run({"a": 17, "b": 25}, {"ones": 9})["sum"] == 49
    assert m.run({"a": 123, "b": 456})["sum"] == 579


def test_intervened_variable_fn_is_not_called_and_children_read_the_value():
    def boom(x):
        raise AssertionError("an intervened variable's fn ran")

    m = cm.CausalModel(
        "toy", ("x",), {"y": (("x",), boom), "z": (("y",), lambda y: y + 1)}, output="z"
    )
    assert m.run({"x": 0}, {"y": 10}) == {"x": 0, "y": 10, "z": 11}


def test_ioi_model_swaps():
    m = cm.ioi_model()
    abba = {"name_1": "Mary", "name_2": "John", "io_first": True}  # IO Mary, S John
    baba = {"name_1": "Bob", "name_2": "Anne", "io_first": False}  # IO Anne, S Bob
    assert m.run(abba)["answer"] == "Mary" and m.run(baba)["answer"] == "Anne"
    assert m.counterfactual(abba, baba, "io_position") == "John"  # the base's S
    assert m.counterfactual(baba, abba, "io_position") == "Bob"
    assert m.counterfactual(abba, dict(abba, name_1="Eve"), "io_position") == "Mary"  # same order
    assert m.counterfactual(abba, baba, "io_name") == "Anne"  # the source's IO
    assert m.counterfactual(abba, baba, "io_first") == "John"


def test_mcqa_model_swaps():
    m = cm.mcqa_model()
    base = {"options": ("red", "blue", "green", "yellow"), "correct": "green"}
    source = {"options": ("green", "black", "white", "pink"), "correct": "pink"}
    assert m.run(base)["letter"] == "C" and m.run(source)["letter"] == "D"
    assert m.counterfactual(base, source, "pointer") == "D"
    assert m.counterfactual(base, source, "options") == "A"  # green is first in the source's
    with pytest.raises(InputError, match="'pink' is not one of"):
        m.counterfactual(base, source, "correct")  # no pink among the base's options


def test_unknown_variable_and_inputs_name_the_valid_ones():
    m = cm.arithmetic_model()
    with pytest.raises(InputError, match=r"'digits'.*'a', 'b', 'ones', 'carry', 'tens', 'sum'"):
        m.check_variable("digits")
    with pytest.raises(InputError, match="no variable 'x'"):
        m.counterfactual({"a": 1, "b": 2}, {"a": 3, "b": 4}, "x")
    with pytest.raises(InputError, match=r"unknown inputs \['c'\].*valid inputs: \['a', 'b'\]"):
        m.run({"a": 1, "b": 2, "c": 3})
    with pytest.raises(InputError, match=r"missing inputs \['b'\]"):
        m.run({"a": 1})
    with pytest.raises(InputError, match="valid:"):
        m.run({"a": 1, "b": 2}, {"borrow": 1})
    with pytest.raises(InputError, match=r"parents \['w'\] of 'y'"):
        cm.CausalModel("bad", ("x",), {"y": (("w",), lambda w: w)}, output="y")
    with pytest.raises(InputError, match="output 'q' is not a variable"):
        cm.CausalModel("bad", ("x",), {"y": (("x",), lambda x: x)}, output="q")


def test_builders_reject_bad_arguments(tok):
    with pytest.raises(InputError, match=r"unknown causal task 'sva'; valid: \['ioi', "):
        cm.pairs("sva", tok, n=4)
    with pytest.raises(InputError, match=r"'io_pos'.*'io_position'"):
        cm.ioi_pairs(tok, "io_pos", n=4)
    with pytest.raises(InputError, match="max_operand >= 10"):
        cm.arithmetic_pairs(tok, "carry", n=4)
    with pytest.raises(InputError, match="must contain"):
        cm.arithmetic_pairs(tok, n=4, template="{x}+{y}=")
    with pytest.raises(InputError, match="one \\[A\\]"):
        cm.ioi_pairs(tok, n=4, template="[A] and [B] went home.")


def test_too_few_one_token_labels_raises():
    vocab = {w: i for i, w in enumerate(["<unk>", "+", "="])}  # no digits: labels are <unk>
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    with pytest.raises(InputError, match="only 0 of the 3 requested rows"):
        cm.arithmetic_pairs(Tokenizer(backend, unk_token="<unk>"), n=3)


# ------------------------------------------------------------------ datasets, re-derived

_IOI = re.compile(r"Then, (\w+) and (\w+) went to the \w+\. (\w+) gave a \w+ to")
_SUM = re.compile(r"(\d+)\+(\d+)=")
_MCQA = re.compile(
    r"The \w+ is (\w+)\. What colour is the \w+\?\nA\. (\w+)\nB\. (\w+)\n"
    r"C\. (\w+)\nD\. (\w+)\nAnswer:"
)


def _ioi_inputs(text):
    n1, n2, s = _IOI.fullmatch(text).groups()
    assert s in (n1, n2) and n1 != n2
    return {"name_1": n1, "name_2": n2, "io_first": s == n2}


def _sum_inputs(text):
    a, b = _SUM.fullmatch(text).groups()
    return {"a": int(a), "b": int(b)}


def _mcqa_inputs(text):
    correct, *options = _MCQA.fullmatch(text).groups()
    return {"options": tuple(options), "correct": correct}


def _check_layout(d, tok, add_bos=None):
    """Tokens, masks and positions agree with the texts tokenized here."""
    for side in ("base", "source"):
        tokens, mask = getattr(d, side), getattr(d, f"{side}_mask")
        for i, text in enumerate(d.info[f"{side}_text"]):
            ids = tok.encode(str(text), add_bos=add_bos)
            assert mask[i].tolist() == [True] * len(ids) + [False] * (mask.shape[1] - len(ids))
            assert tokens[i, : len(ids)].tolist() == ids
            assert getattr(d, f"{side}_positions")[i].tolist() == [len(ids) - 1]


def test_ioi_io_position_labels_are_the_counterfactual_names(tok):
    d = cm.ioi_pairs(tok, "io_position", n=128, seed=0)
    assert len(d) == 128 and d.variable == "io_position" and d.task == "ioi"
    _check_layout(d, tok)
    m = cm.ioi_model()
    orders_differ = []
    for i in range(len(d)):
        base = _ioi_inputs(d.info["base_text"][i])
        source = _ioi_inputs(d.info["source_text"][i])
        names = {base["name_1"], base["name_2"], source["name_1"], source["name_2"]}
        assert len(names) == 4
        io, s = (base["name_1"], base["name_2"])[:: 1 if base["io_first"] else -1]
        differ = base["io_first"] != source["io_first"]
        orders_differ.append(differ)
        assert tok.decode([d.labels[i]]) == " " + (s if differ else io)
        assert tok.decode([d.base_labels[i]]) == " " + io
        assert m.counterfactual(base, source, "io_position") == (s if differ else io)
        # the label is the token after the prompt, read in context
        text = str(d.info["base_text"][i])
        assert tok.encode(text + " " + (s if differ else io)) == tok.encode(text) + [d.labels[i]]
    assert d.info["changes"].tolist() == orders_differ
    assert 0.35 < d.info["changes"].mean() < 0.65


def test_ioi_io_name_gives_the_source_io_with_another_template(tok):
    t = "After [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to"
    d = cm.pairs("ioi", tok, "io_name", n=32, seed=3, template=t)
    _check_layout(d, tok)
    for i in range(len(d)):
        m = re.fullmatch(
            r"After (\w+) and (\w+) went to the \w+, (\w+) gave a \w+ to",
            str(d.info["source_text"][i]),
        )
        assert m is not None
        n1, n2, s = m.groups()
        assert tok.decode([d.labels[i]]) == " " + (n1 if s == n2 else n2)
    assert d.info["changes"].all()
    assert set(d.info["base_io_first"].tolist()) == {True, False}


@pytest.mark.parametrize("variable", ["a", "b", "ones", "sum"])
def test_arithmetic_one_digit_labels(tok, variable):
    d = cm.arithmetic_pairs(tok, variable, n=64, seed=1)
    _check_layout(d, tok)
    m = cm.arithmetic_model()
    for i in range(len(d)):
        base = _sum_inputs(d.info["base_text"][i])
        source = _sum_inputs(d.info["source_text"][i])
        assert (base["a"], base["b"]) == (d.info["base_a"][i], d.info["base_b"][i])
        assert base != source
        want = {
            "a": source["a"] + base["b"],
            "b": base["a"] + source["b"],
            "ones": (source["a"] + source["b"]) % 10,  # the source's sum may have two digits
            "sum": source["a"] + source["b"],
        }[variable]
        assert want < 10 and base["a"] + base["b"] < 10
        assert m.counterfactual(base, source, variable) == want
        assert tok.decode([d.labels[i]]) == str(want)  # no space after a glued "="
        assert tok.decode([d.base_labels[i]]) == str(base["a"] + base["b"])
    assert d.info["changes"].tolist() == (d.labels != d.base_labels).tolist()
    assert d.info["changes"].any() and not d.info["changes"].all()


def test_arithmetic_two_digit_carry_labels_the_first_digit_and_lengths_vary(tok):
    d = cm.arithmetic_pairs(tok, "carry", n=64, seed=0, max_operand=99)
    _check_layout(d, tok)
    assert len(set(d.base_lengths.tolist())) > 1  # "7+45=" beside "17+25="
    assert (d.base_mask.sum(1) != d.source_mask.sum(1)).any()
    for i in range(len(d)):
        base = _sum_inputs(d.info["base_text"][i])
        source = _sum_inputs(d.info["source_text"][i])
        carry = int(source["a"] % 10 + source["b"] % 10 >= 10)
        want = (base["a"] // 10 + base["b"] // 10 + carry) * 10 + (base["a"] + base["b"]) % 10
        assert tok.decode([d.labels[i]]) == str(want)[0]
    assert d.info["changes"].any()


def test_arithmetic_spaced_template_moves_the_space_into_the_prompt(tok):
    """' 5' is ' ', '5' for SmolLM2: the prompt ends with the space, the label is '5'."""
    assert tok.encode(" 5") == tok.encode(" ") + tok.encode("5")
    d = cm.arithmetic_pairs(tok, "a", n=16, seed=0, template="{a} + {b} =")
    _check_layout(d, tok)
    for i in range(len(d)):
        text = str(d.info["base_text"][i])
        a, b = re.fullmatch(r"(\d) \+ (\d) = ", text).groups()
        source_a = re.fullmatch(r"(\d) \+ \d = ", str(d.info["source_text"][i])).group(1)
        assert tok.decode([d.labels[i]]) == str(int(source_a) + int(b))
        assert tok.decode([d.base_labels[i]]) == str(int(a) + int(b))


@pytest.mark.parametrize("variable", ["pointer", "options"])
def test_mcqa_labels(tok, variable):
    d = cm.mcqa_pairs(tok, variable, n=64, seed=0)
    _check_layout(d, tok)
    for i in range(len(d)):
        base = _mcqa_inputs(d.info["base_text"][i])
        source = _mcqa_inputs(d.info["source_text"][i])
        if variable == "pointer":
            want = "ABCD"[source["options"].index(source["correct"])]
        else:
            want = "ABCD"[source["options"].index(base["correct"])]
        assert tok.decode([d.labels[i]]) == " " + want
        assert (
            tok.decode([d.base_labels[i]]) == " " + "ABCD"[base["options"].index(base["correct"])]
        )
    if variable == "pointer":
        assert 0.6 < d.info["changes"].mean() < 0.9  # 3/4 of independent pointers differ


def test_bos_convention_shifts_positions_not_labels(tok, bos_tok):
    plain = cm.arithmetic_pairs(tok, "a", n=16, seed=2, max_operand=99)
    with_bos = cm.arithmetic_pairs(bos_tok, "a", n=16, seed=2, max_operand=99)
    _check_layout(with_bos, bos_tok)
    assert (with_bos.base[:, 0] == bos_tok.bos_token_id).all()
    assert (with_bos.base_positions == plain.base_positions + 1).all()
    assert (with_bos.source_positions == plain.source_positions + 1).all()
    assert (with_bos.labels == plain.labels).all()


def test_determinism_rows_and_split(tok):
    a = cm.pairs("mcqa", tok, n=40, seed=5)
    b = cm.pairs("mcqa", tok, n=40, seed=5)
    c = cm.pairs("mcqa", tok, n=40, seed=6)
    assert a.variable == "pointer"  # the builder's default
    for name in ("base", "source", "labels", "base_labels", "base_positions"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.info["base_text"].tolist() == b.info["base_text"].tolist()
    assert a.info["base_text"].tolist() != c.info["base_text"].tolist()
    train, test = a.split(30)
    assert (len(train), len(test)) == (30, 10)
    assert test.info["source_text"].tolist() == a.info["source_text"][30:].tolist()
    assert np.array_equal(test.labels, a.labels[30:])
    picked = a.rows(np.array([7, 2]))
    assert picked.info["base_text"].tolist() == [a.info["base_text"][7], a.info["base_text"][2]]
    assert np.array_equal(picked.base, a.base[[7, 2]])
    assert picked.info["changes"].tolist() == a.info["changes"][[7, 2]].tolist()
    one = a.rows(3)  # an int index keeps the row axis
    assert len(one) == 1 and one.info["base_text"].tolist() == [a.info["base_text"][3]]
    tagged = dataclasses.replace(a, info={**a.info, "scale": np.asarray(2.0)})
    assert tagged.rows(slice(0, 2)).info["scale"] == 2.0  # 0-d info is not per row
