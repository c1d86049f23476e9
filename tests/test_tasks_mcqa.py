"""MCQA copy-colors and the ARC-style JSONL runner: the symbol counterfactual keeps the
question and the answer's place and changes the symbols; padded rows read the answer at
the last position; bad rows are named."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax import tasks


@pytest.fixture(scope="module")
def tok():
    return mj.load("smollm2-135m").tokenizer


def test_mcqa_symbol_counterfactual(tok):
    b = tasks.mcqa(tok, n=12, seed=3)
    assert b.clean.shape == b.corrupted.shape and len(b) == 12
    for i in range(len(b)):
        c, k = b.clean_text[i], b.corrupted_text[i]
        assert c.split("\n")[0] == k.split("\n")[0]  # the same question
        opts_c = [line[3:] for line in c.split("\n")[1:-1]]
        opts_k = [line[3:] for line in k.split("\n")[1:-1]]
        assert opts_c == opts_k  # same options, same order
        color = c.split(" is ")[1].split(".")[0]
        place = opts_c.index(color)
        assert tok.decode([int(b.answers[i])]).strip() == "ABCD"[place]
        sym = k.split("\n")[1 + place][0]
        assert tok.decode([int(b.wrongs[i])]).strip() == sym and sym not in "ABCD"
    assert len(set(int(x) for x in b.answers)) > 1  # the answer's place varies


def test_multiple_choice_jsonl(tok, tmp_path, tiny_smollm2):
    rows = [
        {"question": {"stem": "Which is a planet?", "choices": [
            {"label": "A", "text": "Mars"}, {"label": "B", "text": "Moon"},
            {"label": "C", "text": "Sun"}, {"label": "D", "text": "Comet"}]}, "answerKey": "A"},
        {"question": "What do plants need to make food from light and water?",
         "choices": ["sunlight", "sand"], "answerKey": "A"},
        {"question": "Two plus two?", "choices": {"label": ["A", "B", "C"],
                                                   "text": ["3", "4", "5"]}, "answerKey": 1},
    ]  # fmt: skip
    path = tmp_path / "arc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    b = tasks.multiple_choice(tok, path)
    assert len(b) == 3 and b.info["attention_mask"].shape == b.clean.shape
    mask = b.info["attention_mask"]
    assert mask[:, -1].all() and not mask.all()  # left-padded: every row ends at the last
    assert [tok.decode([int(x)]).strip() for x in b.answers] == ["A", "A", "B"]
    # a padded row gives the logits it gives alone (the model honours the mask)
    model = tiny_smollm2
    short = int(np.argmin(mask.sum(1)))
    ids = b.clean[short][mask[short]][None]
    alone = mj.run(model, jnp.asarray(ids)).logits[0, -1]
    padded = mj.run(model, jnp.asarray(b.clean), attention_mask=jnp.asarray(mask)).logits[short, -1]
    np.testing.assert_allclose(padded, alone, atol=1e-4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "choices": ["a", "b"], "answerKey": "E"}) + "\n")
    with pytest.raises(tasks.TaskError, match="line 1: answerKey 'E'"):
        tasks.multiple_choice(tok, bad)
