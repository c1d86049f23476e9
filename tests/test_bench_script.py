"""scripts/bench: its command line and its FLOP counter (no peers, no model, fast)."""

import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from conftest import jrun

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SCRIPT = SCRIPTS / "bench"  # a package run as a directory: python scripts/bench


def _bench():
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("bench.common")


def test_help():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for flag in ("--json", "--quick", "--only", "--libs", "--plot"):
        assert flag in out.stdout


TINY = SimpleNamespace(
    d_model=4,
    n_layers=2,
    n_heads=2,
    n_kv_heads=1,
    d_head=2,
    d_mlp=8,
    d_vocab=10,
    model_type="llama",
)


def test_flops_tiny_llama_by_hand():
    bench = _bench()
    # one block's matmul weights: W_Q 4x(2*2) + W_K, W_V 4x(1*2) + W_O (2*2)x4
    # + gate/up/down 3 x 4x8
    per_block = 16 + 8 + 8 + 16 + 96
    assert bench.block_matmul_params(TINY) == per_block == 144
    # batch 1, 3 tokens: 2 * 144 * 3 matmul FLOPs per block; QK^T and AV: 2 * 2 * 1 * 2 heads *
    # 2 d_head * 3 * 3; two blocks; unembedding 2 * 4 * 10 at 3 positions
    blocks = 2 * (2 * 144 * 3 + 2 * 2 * 1 * 2 * 2 * 3 * 3)
    assert bench.forward_flops(TINY, 1, 3) == blocks + 2 * 4 * 10 * 3 == 2256
    # logits at the last position only
    assert bench.forward_flops(TINY, 1, 3, logit_positions=1) == blocks + 80
    # backward to the activations: same matmuls, attention twice
    assert bench.forward_flops(TINY, 1, 3, backward=True) == 2 * (864 + 288) + 240
    # one decode token attending over 5 cached tokens, batch 2
    assert (
        bench.forward_flops(TINY, 2, 1, kv_len=5)
        == 2 * (2 * 144 * 2 + 4 * 2 * 2 * 2 * 5) + 2 * 4 * 10 * 2
    )


def test_flops_ungated_mlp_and_workloads():
    bench = _bench()
    gpt2 = SimpleNamespace(**{**vars(TINY), "model_type": "gpt2", "n_kv_heads": 2})
    assert bench.block_matmul_params(gpt2) == 16 + 16 + 16 + 16 + 2 * 32
    assert bench.workload_flops(TINY, "a", n_pos=3) == bench.forward_flops(TINY, 8, 128)
    # patching sweep with prefix reuse: 2 full runs + per layer l, 3 positions x (2 - l) layers
    fwd = lambda layers: bench.forward_flops(TINY, 1, 3, layers=layers, logit_positions=1)  # noqa: E731
    assert bench.workload_flops(TINY, "b", n_pos=3) == 2 * fwd(2) + 3 * fwd(2) + 3 * fwd(1)
    # generation: the prompt pass, then 63 single-token steps over a growing context
    gen = bench.workload_flops(TINY, "e", n_pos=3, gen_prompt=4)
    steps = sum(bench.forward_flops(TINY, 8, 1, kv_len=4 + i) for i in range(1, 64))
    assert gen == bench.forward_flops(TINY, 8, 4, logit_positions=1) + steps


# ---------------------------------------------------------------- scripts/bench_probes.py


def _bench_probes():
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("bench_probes")


def test_bench_probes_help():
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_probes.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for flag in ("--prepare", "--lib", "--compare", "--all", "--repeats", "--threads"):
        assert flag in out.stdout


def test_bench_probes_prepare_run_and_compare_on_a_tiny_model(tiny_llama, tmp_path, capsys):
    """--prepare's inputs (char ids stand in for a tokenizer), the mechjax side on a tiny
    random model, the sklearn loop on its features and --compare's tables."""
    import json

    import numpy as np
    import pytest

    pytest.importorskip("sklearn")
    bp = _bench_probes()
    bp.prepare(tmp_path, 48, 16, encode=lambda text: [ord(c) % 50 for c in text])
    inp = bp.load_inputs(tmp_path)
    a, b = inp["a"], inp["b"]
    assert inp["tokens"].shape == (48, len("123 + 456 =")) and int(inp["last"]) == 10
    assert np.array_equal(inp["labels"], (a % 10 + b % 10 >= 10).astype(np.int32))
    assert a.min() >= 100 and b.max() <= 999
    assert inp["train_idx"].size + inp["val_idx"].size == 48
    assert not np.intersect1d(inp["train_idx"], inp["val_idx"]).size

    r, acts = bp.run_mechjax(inp, 1, model=tiny_llama, steps=5)
    assert acts.shape == (2, 48, 32) and len(r["val_accuracy"]) == 2
    # the features are resid_post of each block at the last prompt token
    sites = bp.resid_sites(2)
    cache = jrun(tiny_llama, inp["tokens"][:16], capture=sites).cache
    want = np.stack([np.asarray(cache[s])[:, -1] for s in sites])
    np.testing.assert_allclose(acts[:, :16], want, rtol=1e-5, atol=1e-5)
    peer = bp.sklearn_probes(acts, inp)
    assert set(peer["chosen_c"]) <= set(inp["cs"].tolist()) and len(peer["val_pred"]) == 2

    for lib, res in (("mechjax", r), ("hf", {**peer, "times": r["times"], "solver": "-"})):
        res = {**res, "lib": lib, "process_seconds": 1.0, "versions": {}}
        (tmp_path / f"{lib}.json").write_text(json.dumps(res))
        np.save(tmp_path / f"{lib}_acts.npy", acts)
    bp.compare(tmp_path)
    out = capsys.readouterr().out
    assert "| library | harvest s | probe fit s | total s |" in out
    assert "| HF `output_hidden_states` + sklearn per layer | 0 (0) |" in out  # same features
