"""Sweeps over named positions (one index per row), aligned task batches, the CLI figure's
labels and the answer-token check, on a tiny Llama and a word-level tokenizer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import metrics, patching
from mechjax.patching import sweep as patching_sweep

B, P = 3, 7


@pytest.fixture(scope="module")
def rows():
    rs = np.random.RandomState(7)
    clean = rs.randint(0, 50, (B, P)).astype(np.int32)
    corrupted = rs.randint(0, 50, (B, P)).astype(np.int32)
    answers, wrongs = np.array([1, 2, 3]), np.array([4, 5, 6])
    # "S2" sits at a different index in each row; "end" is the last token everywhere
    named = {"S2": np.array([2, 4, 5], np.int32), "end": np.full(B, P - 1, np.int32)}
    return clean, corrupted, answers, wrongs, named


@functools.partial(jax.jit, static_argnames=("name",))
def _one_row(model, tokens, value, pos, head, metric, name):
    return metric(mj.run(model, tokens, {name: mj.Patch(value, pos, head)}).logits)


def _row_oracle(model, clean, corrupted, answers, wrongs, named, kind, layer, head=None):
    """Each row run alone, patched at its own position; the mean over rows per name."""
    name = mj.act_name(kind, layer)
    out = []
    for col in named.values():
        vals = []
        for r in range(B):
            src = mj.run(model, clean[r : r + 1], capture=[name]).cache[name]
            m = metrics.LogitDiff(answers[r : r + 1], wrongs[r : r + 1])
            h = None if head is None else jnp.array([head])
            vals.append(
                float(_one_row(model, corrupted[r : r + 1], src, jnp.array([col[r]]), h, m, name))
            )
        out.append(np.mean(vals))
    return np.asarray(out)


@pytest.mark.parametrize("strategy", ["wave", "scan"])
def test_named_positions_patch_each_row_at_its_own_index(tiny_llama, rows, strategy):
    clean, corrupted, answers, wrongs, named = rows
    metric = metrics.LogitDiff(answers, wrongs)
    res = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "resid_pre", positions=named, strategy=strategy
    )
    assert res.position_labels == ("S2", "end") and res.axes == ("layer", "pos")
    np.testing.assert_array_equal(res.positions, np.stack(list(named.values())))
    for layer in range(tiny_llama.config.n_layers):
        ref = _row_oracle(tiny_llama, clean, corrupted, answers, wrongs, named, "resid_pre", layer)
        got = np.asarray(res.grid[layer])
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=max_diff(got, ref))


def test_named_positions_per_head_and_by_name_list(tiny_llama, rows):
    clean, corrupted, answers, wrongs, named = rows
    metric = metrics.LogitDiff(answers, wrongs)
    res = patching.patch_sweep(
        tiny_llama,
        clean,
        corrupted,
        metric,
        "z",
        positions=["S2", "end"],
        batch_positions=named,
        chunk_size=3,
    )
    n_heads = tiny_llama.config.n_heads
    assert res.grid.shape == (2, 2, n_heads) and res.position_labels == ("S2", "end")
    for h in (0, n_heads - 1):
        ref = _row_oracle(tiny_llama, clean, corrupted, answers, wrongs, named, "z", 1, h)
        np.testing.assert_allclose(np.asarray(res.grid[1, :, h]), ref, atol=1e-5)


def test_named_positions_that_agree_across_rows_equal_the_absolute_columns(tiny_llama, rows):
    clean, corrupted, answers, wrongs, _ = rows
    metric = metrics.LogitDiff(answers, wrongs)
    same = {"a": np.full(B, 1, np.int32), "b": np.full(B, -1, np.int32)}
    named = patching.patch_sweep(tiny_llama, clean, corrupted, metric, "z", positions=same)
    absolute = patching.patch_sweep(tiny_llama, clean, corrupted, metric, "z", positions=[1, 6])
    np.testing.assert_allclose(np.asarray(named.grid), np.asarray(absolute.grid), atol=1e-5)
    # all named positions at once equals the absolute positions at once
    both = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "mlp_out", positions=same, per_position=False
    )
    ref = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "mlp_out", positions=[1, 6], per_position=False
    )
    np.testing.assert_allclose(np.asarray(both.grid), np.asarray(ref.grid), atol=1e-5)


def test_named_positions_bad_inputs(tiny_llama, rows):
    clean, corrupted, answers, wrongs, named = rows
    metric = metrics.LogitDiff(answers, wrongs)
    with pytest.raises(mj.InputError, match="batch_positions"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, positions=["S2"])
    with pytest.raises(mj.InputError, match=r"not in batch_positions"):
        patching.patch_sweep(
            tiny_llama, clean, corrupted, metric, positions=["IO"], batch_positions=named
        )
    with pytest.raises(mj.InputError, match=r"int \[batch\]"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, positions={"x": [1, 2]})
    with pytest.raises(mj.InputError, match=r"in \[-7, 7\)"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, positions={"x": [1, 2, 9]})


# --------------------------------------------------------------- tasks: layouts, labels


@pytest.fixture(scope="module")
def word_tok():
    import tokenizers
    from tokenizers import models, pre_tokenizers

    from mechjax import tasks
    from mechjax.io.tokenizer import Tokenizer
    from mechjax.tasks.ioi import NAMES, OBJECTS, PLACES

    words = set()
    for t in tasks.BABA_TEMPLATES:
        words |= set(t.replace(",", " ,").replace(".", " .").split())
    words |= set(NAMES[:20]) | set(PLACES) | set(OBJECTS)
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>"] + sorted(words))}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    return Tokenizer(backend, bos_token="<s>", add_bos=True)


def test_ioi_default_batch_has_one_layout(word_tok):
    from mechjax import tasks

    b = tasks.ioi(word_tok, 12, seed=3)
    assert b.aligned and b.info["order"] == "baba"
    for name in ("IO", "S1", "S2", "end"):
        assert np.unique(b.positions[name]).size == 1, (name, b.positions[name])
    # the shared layout still holds the right tokens in every row
    rows = np.arange(len(b))
    np.testing.assert_array_equal(b.clean[rows, b.positions["IO"]], b.answers)
    np.testing.assert_array_equal(b.clean[rows, b.positions["S2"]], b.wrongs)


def test_ioi_mixed_layouts_are_opt_in_and_recorded(word_tok):
    from mechjax import tasks

    with pytest.raises(tasks.TaskError, match="aligned=False"):
        tasks.ioi(word_tok, 8, seed=0, order="mixed")
    b = tasks.ioi(word_tok, 8, seed=0, aligned=False)
    assert not b.aligned and b.info["order"] == "mixed"
    assert np.unique(b.positions["S1"]).size > 1  # BABA and ABBA rows both present


def test_position_labels_never_give_row_0s_token_to_a_mixed_column(word_tok):
    from mechjax import tasks

    b = tasks.ioi(word_tok, 8, seed=0, aligned=False)
    labels = b.position_labels(word_tok)
    assert len(labels) == b.clean.shape[1]
    for j, label in enumerate(labels):
        toks = {word_tok.decode([int(t)]) for t in b.clean[:, j]}
        names = {k for k, v in b.positions.items() if (v == j).any()}
        if len(toks) > 1 or names:
            assert label not in toks, (j, label, toks)  # never a bare token of one row
    s2 = b.positions["S2"]
    for j in np.unique(s2):
        assert "S2" in labels[j] and ("|" in labels[j]) == (not (s2 == j).all())
    # an aligned batch: names where the roles are, shared tokens elsewhere
    a = tasks.ioi(word_tok, 8, seed=0)
    la = a.position_labels(word_tok)
    for name in ("IO", "S1", "S2"):
        assert la[a.positions[name][0]] == name
    assert la[0] == "<s>"


def _spacing_tokenizer():
    """A byte-level word tokenizer where ' Mary' and 'Mary' are different tokens."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    from mechjax.io.tokenizer import Tokenizer

    words = "When Mary and John went to the store , gave a drink".split()
    vocab = {"<unk>": 0}
    for w in words:
        vocab.setdefault(w, len(vocab))
        vocab.setdefault("\u0120" + w, len(vocab))  # the byte-level space marker
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return Tokenizer(backend)


def test_from_pair_warns_when_an_answer_lacks_its_leading_space():
    import warnings

    from mechjax import tasks

    tok = _spacing_tokenizer()
    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When Mary and John went to the store, Mary gave a drink to"
    with pytest.warns(UserWarning, match=r"'Mary' has no leading space.*' Mary'"):
        b = tasks.from_pair(tok, clean, corrupt, "Mary", " John")
    assert b.answers[0] == tok.encode("Mary", add_bos=False)[0]  # measured as asked
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spaced = tasks.from_pair(tok, clean, corrupt, " Mary", " John")
        tasks.from_pair(tok, clean + " ", corrupt + " ", "Mary", "John")  # after a space
    assert spaced.answers[0] == tok.encode(" Mary", add_bos=False)[0] != b.answers[0]


# -------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def word_model(word_tok):
    from mechjax.io.families import family_of_module
    from mechjax.models.llama import Config

    llama = family_of_module("llama")
    cfg = Config(
        d_model=16,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        d_head=8,
        d_mlp=24,
        d_vocab=word_tok.vocab_size,
        n_ctx=64,
        rope_theta=10000.0,
    )
    params = llama.init(jax.random.PRNGKey(1), cfg, scale=0.3)
    return mj.Model(params, cfg, llama, tokenizer=word_tok)


def _cli_args(tmp_path, **kw):
    from types import SimpleNamespace

    base = dict(
        model="tiny",
        task="ioi",
        n=4,
        seed=0,
        data_dir=None,
        clean=None,
        corrupt=None,
        answer=None,
        wrong=None,
        out=str(tmp_path / "out.npz"),
        png=str(tmp_path / "out.png"),
        site="resid_pre",
        mode="denoise",
        all_positions=False,
        positions="auto",
        method="eap",
        steps=2,
    )
    return SimpleNamespace(**{**base, **kw})


def test_cli_patch_figure_names_columns_model_site_and_metric(tmp_path, monkeypatch, word_model):
    from mechjax import plotting
    from mechjax.cli import patch as patch_cmd

    monkeypatch.setattr(mj, "load", lambda name: word_model)
    seen = {}
    real = plotting.heatmap
    monkeypatch.setattr(plotting, "heatmap", lambda g, p, **kw: seen.update(kw) or real(g, p, **kw))
    for how, want in (("auto", None), ("named", ["S1", "IO", "S2", "end"])):
        seen.clear()
        args = _cli_args(tmp_path, positions=how)
        assert patch_cmd.cmd_patch(args) == 0
        labels = list(np.load(args.out)["tokens"])
        if want is None:  # one layout: absolute columns, the roles named
            assert len(labels) == np.load(args.out)["grid"].shape[1]
            assert {"IO", "S1", "S2", "end"} <= set(labels)
        else:
            assert sorted(labels) == sorted(want)
        assert seen["xticklabels"] == labels
        title = seen["title"]
        for part in ("tiny", "resid_pre", "answer - wrong", "0 = corrupted, 1 = clean"):
            assert part in title, (part, title)
        assert seen["cbar_label"]
    assert open(args.png, "rb").read(4) == b"\x89PNG"


def test_cli_patch_on_mixed_layouts_sweeps_named_positions(tmp_path, monkeypatch, word_model):
    from mechjax import tasks
    from mechjax.cli import patch as patch_cmd

    monkeypatch.setattr(mj, "load", lambda name: word_model)
    mixed = tasks.ioi(word_model.tokenizer, 4, 0, aligned=False)
    monkeypatch.setattr(patch_cmd, "_batch", lambda args, model: mixed)
    args = _cli_args(tmp_path, png=None)
    assert patch_cmd.cmd_patch(args) == 0
    out = np.load(args.out)
    assert list(out["tokens"]) == list(mixed.positions)
    assert out["grid"].shape == (2, len(mixed.positions))


def test_cli_attribute_eap_writes_a_figure_and_explains_edge_names(
    tmp_path, monkeypatch, capsys, word_model
):
    from mechjax.cli import patch as patch_cmd

    monkeypatch.setattr(mj, "load", lambda name: word_model)
    args = _cli_args(tmp_path, method="eap")
    assert patch_cmd.cmd_attribute(args) == 0
    assert open(args.png, "rb").read(4) == b"\x89PNG"
    text = capsys.readouterr().out
    assert "query input" in text and "mL = MLP L" in text


def test_ie_grid_over_named_positions_reads_each_rows_own_index(tiny_llama):
    from mechjax import mediation
    from mechjax.tasks import TaskBatch

    rs = np.random.RandomState(2)
    clean = rs.randint(0, 50, (3, 6)).astype(np.int32)
    corrupted = clean.copy()
    op = np.array([1, 3, 2], np.int32)  # the operand sits at a different index per row
    corrupted[np.arange(3), op] = rs.randint(0, 50, 3)
    batch = TaskBatch(
        clean, corrupted, np.array([10, 11, 12]), np.array([13, 14, 15]),
        {"op": op, "end": np.full(3, 5, np.int32)}, ("",) * 3, ("",) * 3, "test",
    )  # fmt: skip
    grid = np.asarray(
        mediation.ie_grid(tiny_llama, batch, ("mlp_out",), positions=["op"])["mlp_out"]
    )
    assert grid.shape == (2, 1)
    for layer in range(2):
        per_row = [
            mediation.ie_per_pair(tiny_llama, batch, "mlp_out", layer, int(op[r]))[r]
            for r in range(3)
        ]
        np.testing.assert_allclose(grid[layer, 0], np.mean(per_row), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------- skipped cells, progress


def test_cells_before_the_first_difference_are_skipped_and_equal_running_them(
    tiny_llama, monkeypatch
):
    rs = np.random.RandomState(4)
    clean = rs.randint(0, 50, (B, P)).astype(np.int32)
    corrupted = clean.copy()
    first = np.array([3, 4, 5])  # the prompts differ from these positions on, per row
    for r, f in enumerate(first):
        corrupted[r, f:] = rs.randint(0, 50, P - f)
    metric = metrics.LogitDiff(np.array([1, 2, 3]), np.array([4, 5, 6]))
    ran = []
    real = patching_sweep._run_chunks
    monkeypatch.setattr(
        patching_sweep, "_run_chunks", lambda *a: ran.append(a[3].shape[0]) or real(*a)
    )
    n_heads = tiny_llama.config.n_heads
    for kind in ("z", "resid_pre"):
        ran.clear()
        fast = patching.patch_sweep(tiny_llama, clean, corrupted, metric, kind)
        full = patching.patch_sweep(
            tiny_llama, clean, corrupted, metric, kind, skip_unchanged=False
        )
        per = n_heads if kind == "z" else 1
        assert ran == [(P - 3) * per, P * per]  # positions 0..2 agree in every row
        np.testing.assert_allclose(np.asarray(fast.grid), np.asarray(full.grid), atol=1e-5)
        skipped = np.asarray(fast.grid)[:, :3]
        np.testing.assert_allclose(skipped, float(fast.corrupted_metric), atol=1e-5)
    # named positions: a column is skipped only if every row's index precedes its difference
    named = {"early": np.array([1, 2, 5]), "late": np.array([3, 4, 5]), "none": np.zeros(3, int)}
    ran.clear()
    got = patching.patch_sweep(tiny_llama, clean, corrupted, metric, "mlp_out", positions=named)
    ref = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "mlp_out", positions=named, skip_unchanged=False
    )
    assert ran == [2, 3]  # "none" sits before every row's difference
    np.testing.assert_allclose(np.asarray(got.grid), np.asarray(ref.grid), atol=1e-5)


def test_progress_bar_only_on_a_terminal_and_when_asked(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert patching_sweep._bar(True, "z sweep", 3).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not patching_sweep._bar(True, "z sweep", 3).disable
    assert patching_sweep._bar(False, "z sweep", 3).disable


@pytest.mark.slow
def test_smollm2_ioi_is_aligned_and_the_unspaced_answer_warns():
    """The real tokenizer: the default IOI batch shares one layout, a mixed one labels
    its S2 column by role, and `--answer "Mary"` warns naming ' Mary'."""
    from mechjax import tasks

    tok = mj.load("smollm2-135m").tokenizer
    b = tasks.ioi(tok, 16, seed=0)
    assert b.aligned and len(b) == 16
    labels = b.position_labels(tok)
    assert [labels[b.positions[k][0]] for k in ("IO", "S1", "S2", "end")] == [
        "IO",
        "S1",
        "S2",
        "end",
    ]
    mixed = tasks.ioi(tok, 16, seed=0, aligned=False)
    assert not mixed.aligned
    assert any("S2|" in x or "|S2" in x for x in mixed.position_labels(tok))
    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When Mary and John went to the store, Mary gave a drink to"
    with pytest.warns(UserWarning, match=r"'Mary' has no leading space.*' Mary'"):
        tasks.from_pair(tok, clean, corrupt, "Mary", " John")


def test_patch_result_repr_is_short_and_names_axes(tiny_llama):
    rs = np.random.RandomState(0)
    clean = rs.randint(0, 50, (2, 6)).astype(np.int32)
    corrupted = rs.randint(0, 50, (2, 6)).astype(np.int32)
    metric = metrics.LogitDiff(np.array([1, 2]), np.array([3, 4]))
    res = patching.patch_sweep(tiny_llama, clean, corrupted, metric, "z")
    text = repr(res)
    assert len(text) < 300, text
    n_layers, n_heads = tiny_llama.config.n_layers, tiny_llama.config.n_heads
    assert f"layer={n_layers}, pos=6, head={n_heads}" in text
    assert f"clean={float(res.clean_metric):.4g}" in text
