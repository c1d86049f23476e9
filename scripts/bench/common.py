"""Benchmarks: mechjax against the peer libraries on SmolLM2-135M, same weights, same inputs.

Every workload runs in mechjax and in each peer (TransformerLens's `TransformerBridge`,
nnsight, pyvene, penzai, and plain HF transformers as the floor), each (workload, library)
in a fresh subprocess, on the same dequantized GGUF weights and the same token ids:

  (a) forward with the full residual-stream cache (every `resid_pre` and the last
      `resid_post`), batch 8 x 128 tokens;
  (b) residual-stream activation patching (denoising) over all layers x positions of an
      IOI pair, metric = logit difference ' Mary' - ' John';
  (c) attribution patching (AtP, denoising) of every attention head and MLP at every
      position;
  (d) EAP-IG edge scores (inputs variant, 5 steps);
  (e) greedy generation, batch 8, 64 new tokens (no stop token);
  (f) the same with a steering vector added to `blocks.10.hook_resid_pre` at every step;
  (g) per-head activation patching (denoising) of every attention head's output `z` at
      every layer x position x head, on 8 IOI pairs (`mechjax.tasks.ioi`, one template
      layout), metric = mean logit difference IO - S; TransformerLens's
      `get_act_patch_attn_head_out_by_pos` is its peer.

Each result is the median wall time over `--repeats` runs after one warm-up run (for
mechjax the warm-up is the compile; its cost is reported apart as first call minus
median), the peak resident memory of the subprocess over its model-loaded baseline, and
the largest difference from mechjax's output (tokens: the fraction that differ). The same
run measures the machine's float32 matmul peak (jax, numpy, torch) and reports each
mechjax workload's model FLOP/s as a fraction of the jax peak (FLOPs counted from the
config: 2 x matmul parameters x tokens, plus QK^T and AV; see `workload_flops`).

    bash scripts/bench_setup.sh                       # .venv-bench with the peers
    .venv-bench/bin/python scripts/bench --json out/bench/bench.json
    .venv-bench/bin/python scripts/bench --quick --only a,e --libs mechjax,hf
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]

WORKLOADS = {
    "a": "forward + residual cache, 8 x 128",
    "b": "resid_pre patching, layers x positions",
    "c": "attribution patching, heads + MLPs",
    "d": "EAP-IG edge scores, 5 steps",
    "e": "greedy generation, 8 x 64 new",
    "f": "steered generation, 8 x 64 new",
    "g": "per-head z patching, layers x pos x heads, 8 IOI pairs",
}
LIBS = ("mechjax", "hf", "transformer_lens", "nnsight", "pyvene", "penzai")
LIB_NAMES = {
    "mechjax": "mechjax",
    "hf": "HF transformers",
    "transformer_lens": "TransformerLens",
    "nnsight": "nnsight",
    "pyvene": "pyvene",
    "penzai": "penzai",
}
PEER_MODULES = {
    "hf": "transformers",
    "transformer_lens": "transformer_lens",
    "nnsight": "nnsight",
    "pyvene": "pyvene",
    "penzai": "penzai",
}

MODEL = "smollm2-135m"
HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
FWD_BATCH, FWD_SEQ = 8, 128
GEN_BATCH, GEN_NEW = 8, 64
HEAD_PAIRS = 8  # IOI pairs of workload (g)
EAP_STEPS = 5
STEER_LAYER, STEER_NORM = 10, 8.0
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
GEN_PROMPTS = [
    "The capital of France is a city that",
    "Once upon a time, in a small village by the sea,",
    "The three laws of thermodynamics are the rules that",
    "def fibonacci(n): return the nth number of the",
    "My favourite recipe for pancakes needs flour, eggs and",
    "In 1969, the first humans to walk on the Moon were",
    "A good way to learn a new language is to read",
    "The most important idea in machine learning is the",
]


class Cannot(Exception):
    """This library cannot run this workload (the message says why)."""


# ------------------------------------------------------------------------ FLOP counting


def _mlp_mats(cfg) -> int:
    """Weight matrices in one MLP: 3 for gated (SwiGLU) families, else 2."""
    gated = getattr(cfg, "gated_mlp", None)
    if gated is None:
        gated = getattr(cfg, "model_type", "llama") in ("llama", "mistral", "qwen2", "gemma")
    return 3 if gated else 2


def block_matmul_params(cfg) -> int:
    """Parameters of one block that sit in matmuls (Q, K, V, O and the MLP)."""
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    kv = getattr(cfg, "n_kv_heads", h) or h
    return d * h * dh + 2 * d * kv * dh + h * dh * d + _mlp_mats(cfg) * d * cfg.d_mlp


def forward_flops(
    cfg,
    batch: int,
    q_len: int,
    *,
    kv_len: int | None = None,
    layers: int | None = None,
    logit_positions: int | None = None,
    backward: bool = False,
) -> int:
    """Model FLOPs of a forward pass (or of the activation-gradient backward pass).

    2 x matmul parameters x tokens per block, plus 2 x 2 x batch x heads x d_head x
    q_len x kv_len for QK^T and AV (the full rectangle: causal masking skips no work in
    any of the implementations measured), plus the unembedding at `logit_positions` per
    row (default every position). Norms, softmax, rotary and activations are not counted.

    `backward=True`: the backward pass to the activations only (no weight gradients):
    one matmul per forward matmul, two per attention matmul.
    """
    layers = cfg.n_layers if layers is None else layers
    kv_len = q_len if kv_len is None else kv_len
    lp = q_len if logit_positions is None else logit_positions
    attn = 2 * 2 * batch * cfg.n_heads * cfg.d_head * q_len * kv_len
    if backward:
        attn *= 2
    per_block = 2 * block_matmul_params(cfg) * batch * q_len + attn
    return layers * per_block + 2 * cfg.d_model * cfg.d_vocab * batch * lp


def workload_flops(
    cfg, workload: str, *, n_pos: int, gen_prompt: int = 8, ioi_pos: int | None = None
) -> int:
    """Model FLOPs of the computation mechjax runs for a workload.

    (b) counts the prefix-reused sweep mechjax runs (patching layer l recomputes layers
    l.. only) and (c), (d) one backward to the activations per gradient; metrics read the
    last position only, so metric workloads count the unembedding at one position.
    (e), (f) count the prompt pass and one single-token step per further token, each
    attending over the tokens so far.
    """
    L = cfg.n_layers
    if workload == "a":
        return forward_flops(cfg, FWD_BATCH, FWD_SEQ)
    if workload == "b":
        total = 2 * forward_flops(cfg, 1, n_pos, logit_positions=1)
        for layer in range(L):
            total += n_pos * forward_flops(cfg, 1, n_pos, layers=L - layer, logit_positions=1)
        return total
    if workload == "c":
        fwd = forward_flops(cfg, 1, n_pos, logit_positions=1)
        return 2 * fwd + forward_flops(cfg, 1, n_pos, logit_positions=1, backward=True)
    if workload == "d":
        ungrouped = SimpleNamespace(**{**vars(cfg), "n_kv_heads": cfg.n_heads})  # as eap_ig runs
        fwd = forward_flops(ungrouped, 1, n_pos, logit_positions=1)
        bwd = forward_flops(ungrouped, 1, n_pos, logit_positions=1, backward=True)
        n_src = 1 + L * (cfg.n_heads + 1)
        n_dst = L * (3 * cfg.n_heads + 1) + 1
        contraction = 2 * n_pos * n_src * n_dst * cfg.d_model
        return 2 * fwd + EAP_STEPS * (fwd + bwd) + contraction
    if workload == "g":
        # the prefix-reused sweep over every (layer, position, head), without the cells
        # mechjax skips as exact no-ops (positions before the first clean/corrupted
        # difference): an effective rate, the work a sweep that skipped nothing would do
        b, p = HEAD_PAIRS, ioi_pos or n_pos
        total = 2 * forward_flops(cfg, b, p, logit_positions=1)
        for layer in range(L):
            cells = p * cfg.n_heads
            total += cells * forward_flops(cfg, b, p, layers=L - layer, logit_positions=1)
        return total
    if workload in ("e", "f"):
        total = forward_flops(cfg, GEN_BATCH, gen_prompt, logit_positions=1)
        for i in range(1, GEN_NEW):
            total += forward_flops(cfg, GEN_BATCH, 1, kv_len=gen_prompt + i)
        return total
    raise ValueError(f"unknown workload {workload!r}")


def _cfg_namespace(cfg) -> SimpleNamespace:
    keys = (
        "d_model",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "d_head",
        "d_mlp",
        "d_vocab",
        "model_type",
    )
    return SimpleNamespace(**{k: getattr(cfg, k) for k in keys if hasattr(cfg, k)})


# ------------------------------------------------------------------------- inputs


def prepare(work: Path) -> dict:
    """Inputs (token ids) shared by every library, and a float32 HF copy of the weights.

    HF dequantizes the GGUF itself (`from_pretrained(dir, gguf_file=...)`); that takes
    tens of seconds, so it is done once here and saved as plain safetensors for the
    workers. Returns what the orchestrator needs (shapes, config).
    """
    import numpy as np

    import mechjax as mj
    from mechjax.io import registry

    path = registry.resolve(MODEL)
    model = mj.load(path)
    tok, cfg = model.tokenizer, model.config
    clean, corrupt = tok.encode(CLEAN), tok.encode(CORRUPT)
    if len(clean) != len(corrupt):
        raise SystemExit("the IOI prompts tokenize to different lengths")
    from mechjax import tasks

    ioi = tasks.ioi(tok, HEAD_PAIRS, seed=0)
    rows = [tok.encode(p) for p in GEN_PROMPTS]
    width = min(len(r) for r in rows)
    rng = np.random.RandomState(0)
    delta = rng.standard_normal(cfg.d_model).astype(np.float32)
    np.savez(
        work / "inputs.npz",
        fwd_tokens=rng.randint(0, cfg.d_vocab, (FWD_BATCH, FWD_SEQ)).astype(np.int32),
        clean=np.asarray([clean], np.int32),
        corrupt=np.asarray([corrupt], np.int32),
        answer=np.int32(tok.to_single_token(" Mary")),
        wrong=np.int32(tok.to_single_token(" John")),
        gen_tokens=np.asarray([r[:width] for r in rows], np.int32),
        steer=(STEER_NORM * delta / np.linalg.norm(delta)).astype(np.float32),
        pad=np.int32(tok.pad_token_id or 0),
        ioi_clean=np.asarray(ioi.clean, np.int32),
        ioi_corrupt=np.asarray(ioi.corrupted, np.int32),
        ioi_answers=np.asarray(ioi.answers, np.int32),
        ioi_wrongs=np.asarray(ioi.wrongs, np.int32),
    )
    hf_dir = work / "hf-smollm2"
    note = None
    if not (hf_dir / "model.safetensors").exists():
        try:
            import torch
            import transformers
        except ImportError:
            note = "torch/transformers not installed: peers skipped"
        else:
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            ).eval()
            config = hf.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config  # the GGUF tag blocks save_pretrained
            plain = type(hf)(config).eval()
            plain.load_state_dict(hf.state_dict())
            plain.save_pretrained(str(hf_dir))
            transformers.AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name
            ).save_pretrained(str(hf_dir))
    return {
        "config": vars(_cfg_namespace(cfg)),
        "n_pos": len(clean),
        "ioi_pos": int(ioi.clean.shape[1]),
        "gen_prompt": width,
        "note": note,
    }


def matmul_peak(sizes=(1024, 2048, 3072), reps: int = 3) -> dict:
    """Best float32 GFLOP/s of square matmuls in jax, numpy and (if present) torch."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    out = {}

    def best(fn, n):
        fn()  # warm-up (compile, allocation)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return 2 * n**3 / min(ts) / 1e9

    for n in sizes:
        a = np.random.RandomState(n).standard_normal((n, n)).astype(np.float32)
        b = a.T.copy()
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        mm = jax.jit(jnp.matmul)
        out.setdefault("jax", {})[n] = best(lambda: mm(ja, jb).block_until_ready(), n)
        out.setdefault("numpy", {})[n] = best(lambda: a @ b, n)
        try:
            import torch
        except ImportError:
            continue
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out.setdefault("torch", {})[n] = best(lambda: ta @ tb, n)
    return {"gflops": out, "peak": {k: max(v.values()) for k, v in out.items()}}


# ------------------------------------------------------------------------ libraries


def _np(x):
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().float().numpy()
    return np.asarray(x, np.float32)
