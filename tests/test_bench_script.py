"""scripts/bench: its command line and its FLOP counter (no peers, no model, fast)."""

import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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
