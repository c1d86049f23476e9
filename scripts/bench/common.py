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
  (f) the same with a steering vector added to `blocks.10.hook_resid_pre` at every step.

Each result is the median wall time over `--repeats` runs after one warm-up run (for
mechjax the warm-up is the compile; its cost is reported apart as first call minus
median), the peak resident memory of the subprocess over its model-loaded baseline, and
the largest difference from mechjax's output (tokens: the fraction that differ). The same
run measures the machine's float32 matmul peak (jax, numpy, torch) and reports each
mechjax workload's model FLOP/s as a fraction of the jax peak (FLOPs counted from the
config: 2 x matmul parameters x tokens, plus QK^T and AV; see `workload_flops`).

    bash scripts/bench_setup.sh                       # .venv-bench with the peers
    .venv-bench/bin/python scripts/bench.py --json out/bench/bench.json
    .venv-bench/bin/python scripts/bench.py --quick --only a,e --libs mechjax,hf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent

WORKLOADS = {
    "a": "forward + residual cache, 8 x 128",
    "b": "resid_pre patching, layers x positions",
    "c": "attribution patching, heads + MLPs",
    "d": "EAP-IG edge scores, 5 steps",
    "e": "greedy generation, 8 x 64 new",
    "f": "steered generation, 8 x 64 new",
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


def workload_flops(cfg, workload: str, *, n_pos: int, gen_prompt: int = 8) -> int:
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
    from mechjax import registry

    path = registry.resolve(MODEL)
    model = mj.load(path)
    tok, cfg = model.tokenizer, model.config
    clean, corrupt = tok.encode(CLEAN), tok.encode(CORRUPT)
    if len(clean) != len(corrupt):
        raise SystemExit("the IOI prompts tokenize to different lengths")
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


class MechjaxLib:
    def __init__(self, work: Path, inp):
        import jax
        import jax.numpy as jnp

        import mechjax as mj
        from mechjax import metrics, registry

        self.jax, self.jnp, self.mj = jax, jnp, mj
        self.model = mj.load(registry.resolve(MODEL))
        self.inp = inp
        self.metric = metrics.LogitDiff(jnp.asarray(inp["answer"]), jnp.asarray(inp["wrong"]))
        self.clean, self.corrupt = jnp.asarray(inp["clean"]), jnp.asarray(inp["corrupt"])

    def workload(self, w):
        jax, jnp, mj, model = self.jax, self.jnp, self.mj, self.model
        L = model.config.n_layers
        if w == "a":
            sites = tuple(f"blocks.{l}.hook_resid_pre" for l in range(L)) + (
                f"blocks.{L - 1}.hook_resid_post",
            )
            run = jax.jit(lambda m, t: mj.run(m, t, capture=sites))
            tokens = jnp.asarray(self.inp["fwd_tokens"])
            fn = lambda: jax.block_until_ready(run(model, tokens))  # noqa: E731
            return fn, lambda o: {
                "logits": o.logits[:, ::16],
                "resid": jnp.stack([o.cache[s] for s in sites]),
            }
        if w == "b":
            from mechjax.patching import patch_sweep

            fn = lambda: jax.block_until_ready(  # noqa: E731
                patch_sweep(
                    model, self.clean, self.corrupt, self.metric, "resid_pre"
                )
            )
            return fn, lambda r: {"grid": r.grid}
        if w == "c":
            from mechjax.attribution import atp

            fn = lambda: jax.block_until_ready(  # noqa: E731
                atp(
                    model, self.clean, self.corrupt, self.metric, ("z", "mlp_out"), mode="denoise"
                )
            )
            return fn, lambda r: {
                "heads": jnp.stack([r[f"blocks.{l}.attn.hook_z"] for l in range(L)]),
                "mlps": jnp.stack([r[f"blocks.{l}.hook_mlp_out"] for l in range(L)]),
            }
        if w == "d":
            from mechjax.circuits import eap_ig

            fn = lambda: jax.block_until_ready(  # noqa: E731
                eap_ig(
                    model, self.clean, self.corrupt, self.metric, steps=EAP_STEPS
                )[0]
            )
            return fn, lambda s: {"edges": s}
        if w in ("e", "f"):
            hooks = None
            if w == "f":
                hooks = {
                    f"blocks.{STEER_LAYER}.hook_resid_pre": mj.add(jnp.asarray(self.inp["steer"]))
                }
            tokens = self.inp["gen_tokens"]
            fn = lambda: mj.generate(model, tokens, GEN_NEW, hooks=hooks, stop_tokens=())  # noqa: E731
            return fn, lambda g: {"tokens": g.tokens}
        raise Cannot(f"unknown workload {w}")


class _Torch:
    """Shared by the torch peers: the HF model from the float32 copy of the GGUF."""

    def __init__(self, work: Path, inp):
        import torch
        import transformers

        self.torch = torch
        torch.manual_seed(0)
        d = str(work / "hf-smollm2")
        self.hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        self.hf.requires_grad_(False)
        self.hf.generation_config.eos_token_id = None  # every row runs to GEN_NEW tokens
        self.tok = transformers.AutoTokenizer.from_pretrained(d)
        self.inp = inp
        t = lambda k: torch.as_tensor(inp[k]).long()  # noqa: E731
        self.fwd, self.clean, self.corrupt, self.gen = (
            t("fwd_tokens"),
            t("clean"),
            t("corrupt"),
            t("gen_tokens"),
        )
        self.answer, self.wrong, self.pad = int(inp["answer"]), int(inp["wrong"]), int(inp["pad"])
        self.steer = torch.as_tensor(inp["steer"])
        self.L = self.hf.config.num_hidden_layers
        self.H = self.hf.config.num_attention_heads

    def metric(self, logits):
        return (logits[:, -1, self.answer] - logits[:, -1, self.wrong]).mean()

    def gen_kwargs(self):
        return dict(
            max_new_tokens=GEN_NEW,
            do_sample=False,
            pad_token_id=self.pad,
            attention_mask=self.torch.ones_like(self.gen),
        )


class HFLib(_Torch):
    """Plain transformers with hand-written torch hooks: the floor."""

    def workload(self, w):
        torch, hf, L = self.torch, self.hf, self.L
        layers = hf.model.layers
        if w == "a":

            def fn():
                box = {}
                h = layers[L - 1].register_forward_hook(
                    lambda m, a, o: box.update(post=o[0] if isinstance(o, tuple) else o)
                )
                try:
                    with torch.no_grad():
                        out = hf(self.fwd, output_hidden_states=True)
                finally:
                    h.remove()
                return out.logits, list(out.hidden_states[:L]) + [box["post"]]

            return fn, lambda o: {"logits": o[0][:, ::16], "resid": torch.stack(o[1])}
        if w == "b":
            # one forward per layer over a batch of P corrupted copies, row i patched at
            # position i (batched like nnsight's invokes, the fastest plain-torch sweep)
            def fn():
                with torch.no_grad():
                    hs = hf(self.clean, output_hidden_states=True).hidden_states
                    P = self.clean.shape[1]
                    base = self.corrupt.expand(P, -1)
                    idx = torch.arange(P)
                    grid = torch.zeros(L, P)
                    for l in range(L):

                        def pre(mod, args, kwargs, l=l):
                            x = args[0].clone()
                            x[idx, idx] = hs[l][0, idx]
                            return (x,) + tuple(args[1:]), kwargs

                        h = layers[l].register_forward_pre_hook(pre, with_kwargs=True)
                        try:
                            lg = hf(base).logits
                        finally:
                            h.remove()
                        grid[l] = lg[:, -1, self.answer] - lg[:, -1, self.wrong]
                return grid

            return fn, lambda g: {"grid": g}
        if w == "c":

            def fn():
                zs, mlps, hooks = {}, {}, []

                def keep(store, l, is_input):
                    def f(mod, args, out=None):
                        store[l] = args[0] if is_input else out

                    return f

                for l in range(L):
                    hooks.append(
                        layers[l].self_attn.o_proj.register_forward_pre_hook(keep(zs, l, True))
                    )
                    hooks.append(layers[l].mlp.register_forward_hook(keep(mlps, l, False)))
                try:
                    with torch.no_grad():
                        hf(self.clean)
                    zc, mc = dict(zs), dict(mlps)
                    emb = hf.model.embed_tokens.register_forward_hook(
                        lambda m, a, o: o.requires_grad_(True)
                    )
                    try:
                        m = self.metric(hf(self.corrupt).logits)
                        grads = torch.autograd.grad(
                            m, [zs[l] for l in range(L)] + [mlps[l] for l in range(L)]
                        )
                    finally:
                        emb.remove()
                finally:
                    for h in hooks:
                        h.remove()
                b, p = self.clean.shape
                heads = torch.stack(
                    [
                        ((zc[l] - zs[l]) * grads[l]).reshape(b, p, self.H, -1).sum((0, 3))
                        for l in range(L)
                    ]
                )
                mlp = torch.stack(
                    [((mc[l] - mlps[l]) * grads[L + l]).sum((0, 2)) for l in range(L)]
                )
                return heads, mlp

            return fn, lambda r: {"heads": r[0], "mlps": r[1]}
        if w == "d":
            raise Cannot(
                "not written: plain HF has no per-head q/k/v input sites to take EAP-IG's "
                "edge gradients at"
            )
        if w in ("e", "f"):

            def fn():
                h = None
                if w == "f":
                    h = layers[STEER_LAYER].register_forward_pre_hook(
                        lambda m, args, kw: ((args[0] + self.steer,) + tuple(args[1:]), kw),
                        with_kwargs=True,
                    )
                try:
                    with torch.no_grad():
                        return hf.generate(self.gen, **self.gen_kwargs())
                finally:
                    if h is not None:
                        h.remove()

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")


class TLLib(_Torch):
    """TransformerLens 4.x: `TransformerBridge` around the same HF module (HookedTransformer
    was removed in 4.0); raw HF weights, no weight processing, eager attention."""

    def __init__(self, work, inp):
        super().__init__(work, inp)
        from transformer_lens.model_bridge import TransformerBridge

        self.br = TransformerBridge.boot_transformers(
            HF_NAME, hf_model=self.hf, tokenizer=self.tok, device="cpu"
        )
        self.br.eval()

    def workload(self, w):
        torch, br, L = self.torch, self.br, self.L
        if w == "a":
            names = {f"blocks.{l}.hook_resid_pre" for l in range(L)} | {
                f"blocks.{L - 1}.hook_resid_post"
            }

            def fn():
                with torch.no_grad():
                    return br.run_with_cache(self.fwd, names_filter=lambda n: n in names)

            order = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [
                f"blocks.{L - 1}.hook_resid_post"
            ]
            return fn, lambda o: {
                "logits": o[0][:, ::16],
                "resid": torch.stack([o[1][n] for n in order]),
            }
        if w == "b":
            from transformer_lens import patching

            def fn():
                with torch.no_grad():
                    _, cache = br.run_with_cache(self.clean)
                    return patching.get_act_patch_resid_pre(br, self.corrupt, cache, self.metric)

            return fn, lambda g: {"grid": g}
        if w == "c":
            from transformer_lens.tools.analysis import attribution_patching as ap

            self.hf.requires_grad_(True)  # TL takes its gradients through backward hooks
            fn = lambda: ap.attribution_patch(  # noqa: E731
                br,
                self.clean,
                self.corrupt,
                self.metric,  # noqa: E731
                ap.EdgeAttributionConfig(granularity="node"),
            )
            return fn, self._nodes
        if w == "d":
            from transformer_lens.tools.analysis import attribution_patching as ap

            try:
                ap.EdgeAttributionConfig(granularity="edge", ig_steps=EAP_STEPS)
            except NotImplementedError as e:
                raise Cannot(f"attribution_patch: {e} (edge granularity also refuses GQA)") from e
            raise Cannot("not wired up")
        if w in ("e", "f"):

            def steer(x, hook):
                return x + self.steer

            def fn():
                hooks = [(f"blocks.{STEER_LAYER}.hook_resid_pre", steer)] if w == "f" else []
                with torch.no_grad(), br.hooks(fwd_hooks=hooks):
                    return br.generate(
                        self.gen,
                        max_new_tokens=GEN_NEW,
                        do_sample=False,
                        stop_at_eos=False,
                        verbose=False,
                    )

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")

    def _nodes(self, res):
        import numpy as np

        P = self.clean.shape[1]
        heads, mlps = np.zeros((self.L, P, self.H), np.float32), np.zeros((self.L, P), np.float32)
        for node, s in res.node_scores.items():
            if node.kind == "attn_head_out":
                heads[node.layer, node.position, node.head] = s
            elif node.kind == "mlp_out":
                mlps[node.layer, node.position] = s
        return {"heads": heads, "mlps": mlps}


class NNsightLib(_Torch):
    """nnsight `LanguageModel` around the same HF module; the docs' patterns."""

    def __init__(self, work, inp):
        super().__init__(work, inp)
        import warnings

        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.m = LanguageModel(self.hf, tokenizer=self.tok)

    def workload(self, w):
        torch, m, L, H = self.torch, self.m, self.L, self.H
        layers = m.model.layers
        if w == "a":

            def fn():
                resid = []
                with torch.no_grad(), m.trace(self.fwd):
                    for l in range(L):
                        resid.append(layers[l].input.save())
                    resid.append(layers[L - 1].output.save())
                    logits = m.lm_head.output.save()
                return logits, resid

            return fn, lambda o: {"logits": o[0][:, ::16], "resid": torch.stack(list(o[1]))}
        if w == "b":
            # per layer one trace over P corrupted copies, row i patched at position i
            def fn():
                P = self.clean.shape[1]
                clean = []
                with torch.no_grad():
                    with m.trace(self.clean):
                        for l in range(L):
                            clean.append(layers[l].input.save())
                    base = self.corrupt.expand(P, -1)
                    idx = torch.arange(P)
                    rows = []
                    for l in range(L):
                        with m.trace(base):
                            layers[l].input[idx, idx] = clean[l][0, idx]
                            last = m.lm_head.output[:, -1].save()
                        rows.append(last[:, self.answer] - last[:, self.wrong])
                return torch.stack(rows)

            return fn, lambda g: {"grid": g}
        if w == "c":

            def fn():
                zc, mc, zs, ms, gz, gm = [], [], [], [], [None] * L, [None] * L
                with torch.no_grad(), m.trace(self.clean):
                    for l in range(L):
                        zc.append(layers[l].self_attn.o_proj.input.save())
                        mc.append(layers[l].mlp.output.save())
                with m.trace(self.corrupt):
                    refs = []
                    for l in range(L):
                        z = layers[l].self_attn.o_proj.input
                        z.requires_grad_(True)
                        zs.append(z.save())
                        mo = layers[l].mlp.output
                        mo.requires_grad_(True)
                        ms.append(mo.save())
                        refs.append((z, mo))
                    logits = m.lm_head.output
                    metric = (logits[:, -1, self.answer] - logits[:, -1, self.wrong]).mean()
                    with metric.backward():
                        for l in reversed(range(L)):
                            gm[l] = refs[l][1].grad.save()
                            gz[l] = refs[l][0].grad.save()
                b, p = self.clean.shape
                heads = torch.stack(
                    [((zc[l] - zs[l]) * gz[l]).reshape(b, p, H, -1).sum((0, 3)) for l in range(L)]
                )
                mlp = torch.stack([((mc[l] - ms[l]) * gm[l]).sum((0, 2)) for l in range(L)])
                return heads, mlp

            return fn, lambda r: {"heads": r[0], "mlps": r[1]}
        if w == "d":
            raise Cannot("no EAP-IG in nnsight (a documented pattern for node attribution only)")
        if w in ("e", "f"):

            def fn():
                with (
                    torch.no_grad(),
                    m.generate(
                        max_new_tokens=GEN_NEW, do_sample=False, pad_token_id=self.pad
                    ) as tr,
                ):
                    with tr.invoke(self.gen):
                        if w == "f":
                            for _ in tr.all():
                                layers[STEER_LAYER].input[:] += self.steer
                    with tr.invoke():
                        out = tr.result.save()
                return out

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")


class PyveneLib(_Torch):
    """pyvene `IntervenableModel` around the same HF module."""

    def __init__(self, work, inp):
        super().__init__(work, inp)
        import pyvene as pv

        self.pv = pv

    def workload(self, w):
        torch, pv, hf, L = self.torch, self.pv, self.hf, self.L
        if w == "a":
            # keep_last_dim: without it pyvene mis-reshapes multi-position collections
            collect = lambda: pv.CollectIntervention(keep_last_dim=True)  # noqa: E731
            cfg = [
                {"layer": l, "component": "block_input", "intervention": collect()}
                for l in range(L)
            ] + [{"layer": L - 1, "component": "block_output", "intervention": collect()}]
            pvm = pv.IntervenableModel(cfg, model=hf)
            b, p = self.fwd.shape
            loc = [[list(range(p))] * b] * (L + 1)

            def fn():
                with torch.no_grad():
                    (_, collected), out = pvm(
                        {"input_ids": self.fwd},
                        unit_locations={"base": loc},
                        output_original_output=True,
                    )
                return out.logits, collected

            return fn, lambda o: {
                "logits": o[0][:, ::16],
                "resid": torch.stack([c.reshape(b, p, -1) for c in o[1]]),
            }
        if w == "b":

            def fn():
                P = self.clean.shape[1]
                base, src = self.corrupt.expand(P, -1), self.clean.expand(P, -1)
                loc = [[[i] for i in range(P)]]
                rows = []
                with torch.no_grad():
                    for l in range(L):
                        pvm = pv.IntervenableModel(
                            {
                                "layer": l,
                                "component": "block_input",
                                "intervention_type": pv.VanillaIntervention,
                            },
                            model=hf,
                        )
                        _, cf = pvm(
                            {"input_ids": base}, [{"input_ids": src}], {"sources->base": (loc, loc)}
                        )
                        lg = cf.logits[:, -1]
                        rows.append(lg[:, self.answer] - lg[:, self.wrong])
                return torch.stack(rows)

            return fn, lambda g: {"grid": g}
        if w in ("c", "d"):
            raise Cannot("no gradients with respect to activations in pyvene's API")
        if w == "e":
            raise Cannot("n/a: without an intervention pyvene generates with HF generate")
        if w == "f":
            pvm = pv.IntervenableModel(
                {
                    "layer": STEER_LAYER,
                    "component": "block_input",
                    "intervention_type": pv.AdditionIntervention,
                },
                model=hf,
            )

            def fn():
                with torch.no_grad():
                    _, out = pvm.generate(
                        {"input_ids": self.gen},
                        unit_locations=None,
                        source_representations=self.steer,
                        intervene_on_prompt=True,
                        **self.gen_kwargs(),
                    )
                return out

            return fn, lambda o: {"tokens": o[:, self.gen.shape[1] :]}
        raise Cannot(f"unknown workload {w}")


class PenzaiLib:
    """penzai's Llama conversion of the same HF module (see `_convert`), run under jit."""

    def __init__(self, work, inp):
        import jax

        self.jax, self.inp = jax, inp
        self.model = self._convert(work)

    @staticmethod
    def _convert(work):
        import torch
        import transformers
        from penzai.models.transformer.variants import llamalike_common

        hf = transformers.AutoModelForCausalLM.from_pretrained(
            str(work / "hf-smollm2"), dtype=torch.float32
        ).eval()
        # penzai 0.2.5's `llama_from_huggingface_model` refuses this config under
        # transformers 5 (tie_word_embeddings, rope_parameters); the shared converter
        # it calls works once `rope_theta` is where it looks for it.
        hf.config.rope_theta = hf.config.rope_parameters["rope_theta"]
        return llamalike_common.llamalike_from_huggingface_model(hf)

    def workload(self, w):
        import jax.numpy as jnp
        from penzai import pz
        from penzai.models.transformer import model_parts
        from penzai.toolshed import jit_wrapper

        jax, model = self.jax, self.model
        if w == "a":

            @pz.pytree_dataclass
            class Tap(pz.nn.Layer):
                cell: pz.StateVariable

                def __call__(self, x, **side):
                    self.cell.value = x
                    return x

            L = len(pz.select(model).at_instances_of(model_parts.TransformerBlock).get_sequence())
            last = pz.StateVariable(None)
            tapped = (
                pz.select(model)
                .at_instances_of(model_parts.TransformerBlock)
                .pick_nth_selected(L - 1)
                .insert_after(Tap(last))
            )
            cells = []

            def tap(block):
                cells.append(pz.StateVariable(None))
                return pz.nn.Sequential([Tap(cells[-1]), block])

            tapped = pz.select(tapped).at_instances_of(model_parts.TransformerBlock).apply(tap)
            cells.append(last)
            jitted = jit_wrapper.Jitted(tapped)
            tokens = pz.nx.wrap(jnp.asarray(self.inp["fwd_tokens"])).tag("batch", "seq")

            def fn():
                logits = jitted(tokens)
                resid = [c.value.unwrap("batch", "seq", "embedding") for c in cells]
                return jax.block_until_ready((logits.unwrap("batch", "seq", "vocabulary"), resid))

            return fn, lambda o: {"logits": o[0][:, ::16], "resid": jnp.stack(o[1])}
        if w in ("b", "c", "d"):
            raise Cannot("no patching, attribution or circuit helpers in penzai (user code)")
        if w in ("e", "f"):
            from penzai.models.transformer import sampling_mode, simple_decoding_loop

            base = model
            if w == "f":
                steer = pz.nx.wrap(jnp.asarray(self.inp["steer"])).tag("embedding")

                @pz.pytree_dataclass
                class AddSteer(pz.nn.Layer):
                    delta: pz.nx.NamedArray

                    def __call__(self, x, **side):
                        return x + self.delta

                blocks = pz.select(model).at_instances_of(model_parts.TransformerBlock)
                base = blocks.pick_nth_selected(STEER_LAYER).insert_before(AddSteer(steer))
            prompt = pz.nx.wrap(jnp.asarray(self.inp["gen_tokens"])).tag("batch", "seq")
            n_prompt = self.inp["gen_tokens"].shape[1]

            def fn():
                lm = sampling_mode.KVCachingTransformerLM.from_uncached(
                    base, cache_len=n_prompt + GEN_NEW, batch_axes={"batch": GEN_BATCH}
                )
                out = simple_decoding_loop.temperature_sample_pyloop(
                    _JittedLM(lm, jit_wrapper.Jitted(lm)),
                    prompt=prompt,
                    rng=jax.random.key(0),
                    temperature=1e-6,
                    max_sampling_steps=GEN_NEW,
                )
                return jax.block_until_ready(out.unwrap("batch", "seq"))

            return fn, lambda o: {"tokens": o}
        raise Cannot(f"unknown workload {w}")


class _JittedLM:
    """penzai's `Jitted` wrapper for the calls, the wrapped model for its attributes
    (`temperature_sample_pyloop` reads `pad_id` and the cache state, which `Jitted` hides)."""

    def __init__(self, lm, jitted):
        self._lm, self._jitted = lm, jitted

    def __call__(self, *args, **kwargs):
        return self._jitted(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._lm, name)


LIB_CLASSES = {
    "mechjax": MechjaxLib,
    "hf": HFLib,
    "transformer_lens": TLLib,
    "nnsight": NNsightLib,
    "pyvene": PyveneLib,
    "penzai": PenzaiLib,
}


# ------------------------------------------------------------------------ worker


class _RssSampler:
    """Peak resident set size over a period (psutil polling; else ru_maxrss)."""

    def __init__(self, interval=0.005):
        try:
            import psutil

            self.proc = psutil.Process()
        except ImportError:
            self.proc = None
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def rss(self) -> int:
        if self.proc is not None:
            return self.proc.memory_info().rss
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        self.peak = self.rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def run_worker(spec: str, work: Path, repeats: int, budget: float) -> dict:
    import numpy as np

    w, lib = spec.split(":")
    inp = dict(np.load(work / "inputs.npz"))
    t = time.perf_counter()
    try:
        obj = LIB_CLASSES[lib](work, inp)
        fn, extract = obj.workload(w)
    except Cannot as e:
        return {"status": "cannot", "reason": str(e)}
    load_s = time.perf_counter() - t
    sampler = _RssSampler()
    base = sampler.rss()
    with sampler:
        t = time.perf_counter()
        out = fn()  # warm-up: compile (mechjax, penzai), allocation, lazy imports (torch)
        first = time.perf_counter() - t
        # the slowest peers get fewer repeats: at most `budget` seconds of timed runs; a
        # torch run (no compilation) longer than the budget is timed by its first call
        repeats = min(repeats, max(1, int(budget // max(first, 1e-9)))) if repeats else 0
        if lib != "mechjax" and lib != "penzai" and first > budget:
            repeats = 0
        times = [] if repeats else [first]  # --repeats 0: a smoke run, the first call timed
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    arrays = {k: _np(v) for k, v in extract(out).items()}
    np.savez(work / f"out_{w}_{lib}.npz", **arrays)
    extra = {}
    if lib in ("hf", "transformer_lens", "nnsight", "pyvene"):
        import torch

        extra["torch_threads"] = torch.get_num_threads()
    return {
        "status": "ok",
        "repeats": len(times),
        "times": times,
        "median_s": float(np.median(times)),
        "first_s": first,
        "load_s": load_s,
        "rss_base_mb": base / 2**20,
        "rss_peak_mb": sampler.peak / 2**20,
        "rss_delta_mb": (sampler.peak - base) / 2**20,
        **extra,
    }


# ------------------------------------------------------------------------ orchestrator


def _sub(args_list, work: Path, timeout: float) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore",
    }
    res = work / f"res_{os.getpid()}_{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        *args_list,
        "--work-dir",
        str(work),
        "--result",
        str(res),
    ]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0 or not res.exists():
        lines = [x for x in (p.stderr or "").strip().splitlines() if x.strip()]
        return {"status": "error", "reason": lines[-1][:300] if lines else f"exit {p.returncode}"}
    out = json.loads(res.read_text())
    res.unlink()
    return out


def compare(work: Path, w: str, lib: str) -> dict:
    """Largest difference of `lib`'s output from mechjax's (tokens: fraction differing)."""
    import numpy as np

    a, b = work / f"out_{w}_mechjax.npz", work / f"out_{w}_{lib}.npz"
    if not (a.exists() and b.exists()):
        return {}
    ref, got = np.load(a), np.load(b)
    if w in ("e", "f"):
        r, g = ref["tokens"], got["tokens"].astype(ref["tokens"].dtype)
        if r.shape != g.shape:
            return {"max_diff": None, "diff_note": f"shape {g.shape} vs {r.shape}"}
        return {
            "max_diff": float((r != g).mean()),
            "diff_kind": "tokens differing",
            "rows_identical": int((r == g).all(1).sum()),
        }
    worst, rel = 0.0, 0.0
    for k in ref.files:
        if k not in got.files or got[k].shape != ref[k].shape:
            return {"max_diff": None, "diff_note": f"{k}: shape mismatch"}
        d = float(np.abs(got[k] - ref[k]).max())
        worst = max(worst, d)
        rel = max(rel, d / max(float(np.abs(ref[k]).max()), 1e-30))
    return {"max_diff": worst, "rel_diff": rel, "diff_kind": "max abs"}


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 2**20, 1)
        info["load_avg"] = os.getloadavg()
    except OSError:
        pass
    from importlib import metadata

    versions = {}
    for pkg in (
        "jax",
        "jaxlib",
        "torch",
        "transformers",
        "transformer-lens",
        "nnsight",
        "pyvene",
        "penzai",
        "mechjax",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    info["versions"] = versions
    return info


def _fmt_s(x):
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _fmt_diff(r):
    d = r.get("max_diff")
    if d is None:
        return r.get("diff_note", "-")
    if r.get("diff_kind") == "tokens differing":
        return f"{d:.1%} of tokens"
    return f"{d:.1e} (rel {r['rel_diff']:.0e})"


def table(results: dict, peak: dict) -> str:
    rows = [
        "| workload | library | median s | ratio (lib / mechjax) | peak MB (+over loaded) "
        "| max diff vs mechjax | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for w, libs in results.items():
        mj_t = libs.get("mechjax", {}).get("median_s")
        for lib, r in libs.items():
            name = LIB_NAMES[lib]
            if r["status"] != "ok":
                label = "cannot" if r["status"] == "cannot" else "error"
                rows.append(
                    f"| ({w}) {WORKLOADS[w]} | {name} | {label} | - | - | - "
                    f"| {r.get('reason', '')} |"
                )
                continue
            ratio = "1" if lib == "mechjax" else (f"{r['median_s'] / mj_t:.2f}x" if mj_t else "-")
            notes = []
            if lib == "mechjax":
                notes.append(f"compile {r['compile_s']:.1f} s")
                if r.get("flop_frac") is not None:
                    notes.append(
                        f"{r['gflops']:.1f} GFLOP/s = {r['flop_frac']:.0%} of jax matmul peak"
                    )
            mem = f"{r['rss_peak_mb']:.0f} (+{r['rss_delta_mb']:.0f})"
            diff = "-" if lib == "mechjax" else _fmt_diff(r)
            rows.append(
                f"| ({w}) {WORKLOADS[w]} | {name} | {_fmt_s(r['median_s'])} | {ratio} | {mem} "
                f"| {diff} | {'; '.join(notes)} |"
            )
    return "\n".join(rows)


def plot(results: dict, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ws = list(results)
    libs = [lib for lib in LIBS if any(lib in results[w] for w in ws)]
    times = [r["median_s"] for w in ws for r in results[w].values() if r["status"] == "ok"]
    lo, hi = min(times) / 4, max(times) * 4
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.9 * len(ws)))
    height = 0.8 / max(len(libs), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, lib in enumerate(libs):
        for j, w in enumerate(ws):
            r = results[w].get(lib)
            y = j + (i - (len(libs) - 1) / 2) * height
            if r is None:
                continue
            if r["status"] == "ok":
                ax.barh(
                    y,
                    r["median_s"],
                    height,
                    color=colors[i % len(colors)],
                    label=LIB_NAMES[lib]
                    if j == next(k for k, x in enumerate(ws) if lib in results[x])
                    else None,
                )
                ax.text(r["median_s"] * 1.05, y, _fmt_s(r["median_s"]), va="center", fontsize=7)
            else:
                ax.text(
                    lo * 1.1,
                    y,
                    f"{LIB_NAMES[lib]}: {r['status']}",
                    va="center",
                    fontsize=7,
                    color="grey",
                )
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_yticks(np.arange(len(ws)), [f"({w}) {WORKLOADS[w]}" for w in ws], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median wall time, s (log scale; shorter is faster)")
    ax.set_title(title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lbl in zip(handles, labels):
        seen.setdefault(lbl, h)
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. a,b (default all)")
    ap.add_argument("--libs", default=",".join(LIBS), help=f"libraries (default {','.join(LIBS)})")
    ap.add_argument(
        "--quick", action="store_true", help="1 timed repeat instead of 5, smaller matmul peak"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats after the warm-up")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument(
        "--plot", type=Path, default=None, help="write the bar chart here (e.g. docs/bench.png)"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=300,
        help="seconds of timed runs per (workload, library): slow peers get fewer "
        "repeats (at least 1)",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per (workload, library)")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "out" / "bench",
        help="inputs, the HF weight copy and outputs (default out/bench)",
    )
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="print the table (and --plot) of a saved --json run; runs nothing",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)

    if args.worker:  # inside a subprocess
        if args.worker == "prepare":
            out = prepare(work)
        elif args.worker == "peak":
            out = matmul_peak(sizes=(1024, 2048) if args.quick else (1024, 2048, 3072))
        else:
            out = run_worker(args.worker, work, repeats, args.budget)
        args.result.write_text(json.dumps(out))
        return 0

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results = {w: v["libraries"] for w, v in saved["workloads"].items()}
        print(table(results, saved["matmul_peak"]))
        if args.plot:
            m = saved["machine"]
            plot(
                results,
                args.plot,
                f"SmolLM2-135M on {m.get('cpu', 'CPU')} ({m['cores']} cores)"
                + (", --quick" if saved.get("quick") else ""),
            )
            print(f"wrote {args.plot}")
        return 0

    only = [w.strip() for w in args.only.split(",") if w.strip()]
    libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    bad = [w for w in only if w not in WORKLOADS] + [x for x in libs if x not in LIBS]
    if bad:
        ap.error(
            f"unknown workload or library: {bad}; "
            f"workloads {list(WORKLOADS)}, libraries {list(LIBS)}"
        )
    if "mechjax" not in libs:
        libs.insert(0, "mechjax")

    info = machine_info()
    print(
        f"machine: {info.get('cpu', '?')}, {info['cores']} cores, {info.get('memory_gb', '?')} GB; "
        f"load average {info.get('load_avg', ('?',))[0]}",
        flush=True,
    )
    prep = _sub(["--worker", "prepare"], work, args.timeout)
    if "config" not in prep:
        print(f"prepare failed: {prep}", file=sys.stderr)
        return 1
    cfg = SimpleNamespace(**prep["config"])
    peak = _sub(["--worker", "peak"] + (["--quick"] if args.quick else []), work, args.timeout)
    jax_peak = peak.get("peak", {}).get("jax")
    print(
        "float32 matmul peak, GFLOP/s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in peak.get("peak", {}).items()),
        flush=True,
    )

    import importlib.util

    results: dict = {}
    for w in only:
        results[w] = {}
        for lib in libs:
            mod = PEER_MODULES.get(lib)
            if mod and importlib.util.find_spec(mod) is None:
                r = {
                    "status": "cannot",
                    "reason": f"{mod} not installed (run scripts/bench_setup.sh)",
                }
            else:
                r = _sub(
                    [
                        "--worker",
                        f"{w}:{lib}",
                        "--repeats",
                        str(repeats),
                        "--budget",
                        str(args.budget),
                    ],
                    work,
                    args.timeout,
                )
            if r["status"] == "ok" and lib == "mechjax":
                r["compile_s"] = max(r["first_s"] - r["median_s"], 0.0)
                r["flops"] = workload_flops(
                    cfg, w, n_pos=prep["n_pos"], gen_prompt=prep["gen_prompt"]
                )
                r["gflops"] = r["flops"] / r["median_s"] / 1e9
                r["flop_frac"] = r["gflops"] / jax_peak if jax_peak else None
            if r["status"] == "ok" and lib != "mechjax":
                r.update(compare(work, w, lib))
                mj_t = results[w].get("mechjax", {}).get("median_s")
                if mj_t:
                    r["ratio"] = r["median_s"] / mj_t
            results[w][lib] = r
            msg = (
                f"{r['median_s']:.3f} s median, first {r['first_s']:.2f} s, "
                f"peak {r['rss_peak_mb']:.0f} MB"
                if r["status"] == "ok"
                else f"{r['status']}: {r.get('reason', '')}"
            )
            print(f"  ({w}) {LIB_NAMES[lib]:16s} {msg}", flush=True)

    print()
    print(table(results, peak))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "load_avg_after": load_after,
                    "matmul_peak": peak,
                    "repeats": repeats,
                    "quick": args.quick,
                    "model": MODEL,
                    "inputs": {
                        "ioi_positions": prep["n_pos"],
                        "gen_prompt_tokens": prep["gen_prompt"],
                    },
                    "workloads": {
                        w: {"title": WORKLOADS[w], "libraries": results[w]} for w in results
                    },
                },
                indent=1,
            )
        )
        print(f"\nwrote {args.json}")
    if args.plot:
        plot(
            results,
            args.plot,
            f"SmolLM2-135M on {info.get('cpu', 'CPU')} ({info['cores']} cores)"
            + (", --quick" if args.quick else ""),
        )
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
