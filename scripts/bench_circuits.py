"""Benchmark: circuit discovery in mechjax against EAP-IG (`hannamw/EAP-IG`, MIB's code)
on SmolLM2-135M IOI pairs, same weights, same token ids, same steps.

  (1) EAP-IG edge scores (inputs variant, --steps steps, batches of --batch pairs):
      mechjax's `circuits.eap_ig` against EAP-IG's `attribute(..., "EAP-IG-inputs")`;
      parity is the largest score difference at EAP-IG's scale (`scale="eap-ig"`);
  (2) the faithfulness curve at MIB's ten fractions: mechjax's `circuits.faithfulness`
      (both rankings, the empty circuit and the clean run: 22 circuits in one compiled
      program) against MIB's loop (`evaluate_area_under_curve`: the clean baseline, the
      empty circuit, then `apply_topn` + `evaluate_graph` per fraction, 12 evaluations
      for one ranking), on the same scores;
  (3) learned edge masks against auto-circuit, where it imports next to the reference.

EAP-IG is not on the package index: pass its source directory (a local checkout's `src`)
with --eap-ig-src; its code is imported from there, never copied. It needs TransformerLens
before 4.0 (`HookedTransformer`); the TransformerLens model is built from mechjax's
dequantized weights (TransformerLens and mechjax share weight names and shapes) and its
logits are checked against mechjax's first. Two shims make it run here without changing
its code: its `torch.zeros(..., device="cuda")` score buffers go to the CPU, and its
`tokenize_plus` returns the given token ids (so both sides see the same tokens; EAP-IG
would otherwise prepend a BOS that SmolLM2 does not use).

    python -m venv .venv-eapig && .venv-eapig/bin/pip install torch==2.13.0 \\
        "transformer-lens<4" einops tqdm && .venv-eapig/bin/pip install -e .
    .venv-eapig/bin/python scripts/bench_circuits.py --eap-ig-src CHECKOUT/src --json out.json

Times are wall seconds of one run, both sides in this process on the same CPU threads:
mechjax's after a warm-up call (its compile, reported apart), the reference's first call
(PyTorch compiles nothing; `--reference-warmup` warms it up too). mechjax's curve
evaluates 22 circuits (both rankings, the empty circuit and the clean run) where the
reference's loop evaluates 12 (one ranking): the script also times mechjax on the
reference's own 12 circuits (`rankings=["signed"]`), the same-work ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def tl_config(model, grouped: bool = True):
    """TransformerLens config of mechjax's SmolLM2 (`grouped=False`: one key/value head
    per query head, for TransformerLens 1.x, which has no ungrouped-GQA option)."""
    import torch
    from transformer_lens import HookedTransformerConfig

    c = model.config
    gqa = {"n_key_value_heads": c.n_kv_heads} if grouped else {}
    return HookedTransformerConfig(
        d_model=c.d_model, d_head=c.d_head, n_heads=c.n_heads, d_mlp=c.d_mlp,
        n_layers=c.n_layers, n_ctx=2048, d_vocab=c.d_vocab, act_fn="silu",
        normalization_type="RMS", positional_embedding_type="rotary", rotary_base=c.rope_theta,
        rotary_dim=c.d_head, gated_mlp=True, final_rms=True, eps=c.eps,
        original_architecture="LlamaForCausalLM", default_prepend_bos=False, dtype=torch.float32,
        **gqa,
    )  # fmt: skip


def tl_state_dict(model, grouped: bool = True) -> dict:
    """mechjax's SmolLM2 weights under TransformerLens's names (they share shapes); with
    `grouped=False` each key/value head is repeated for its query heads (the same
    function)."""
    import torch

    c = model.config
    n_kv = c.n_kv_heads if grouped else c.n_heads
    rep = 1 if grouped else c.n_heads // c.n_kv_heads
    k = "_" if grouped else ""  # TransformerLens's grouped key/value weights are _W_K, _W_V
    t = lambda x: torch.as_tensor(np.asarray(x, np.float32))  # noqa: E731
    kv = lambda x: t(np.repeat(np.asarray(x, np.float32), rep, axis=0))  # noqa: E731
    p = model.params
    sd = {"embed.W_E": t(p["embed"]["W_E"]), "ln_final.w": t(p["ln_final"]["w"]),
          "unembed.W_U": t(p["unembed"]["W_U"]), "unembed.b_U": torch.zeros(c.d_vocab)}  # fmt: skip
    for l, b in enumerate(p["blocks"]):
        a, m = b["attn"], b["mlp"]
        sd.update({
            f"blocks.{l}.ln1.w": t(b["ln1"]["w"]), f"blocks.{l}.ln2.w": t(b["ln2"]["w"]),
            f"blocks.{l}.attn.W_Q": t(a["W_Q"]), f"blocks.{l}.attn.{k}W_K": kv(a["W_K"]),
            f"blocks.{l}.attn.{k}W_V": kv(a["W_V"]), f"blocks.{l}.attn.W_O": t(a["W_O"]),
            f"blocks.{l}.attn.b_Q": torch.zeros(c.n_heads, c.d_head),
            f"blocks.{l}.attn.{k}b_K": torch.zeros(n_kv, c.d_head),
            f"blocks.{l}.attn.{k}b_V": torch.zeros(n_kv, c.d_head),
            f"blocks.{l}.attn.b_O": torch.zeros(c.d_model),
            f"blocks.{l}.mlp.W_in": t(m["W_in"]), f"blocks.{l}.mlp.W_gate": t(m["W_gate"]),
            f"blocks.{l}.mlp.W_out": t(m["W_out"]), f"blocks.{l}.mlp.b_in": torch.zeros(c.d_mlp),
            f"blocks.{l}.mlp.b_out": torch.zeros(c.d_model),
        })  # fmt: skip
    return sd


def tl_model(model):
    """A TransformerLens HookedTransformer with mechjax's SmolLM2 weights."""
    from transformer_lens import HookedTransformer

    tl = HookedTransformer(tl_config(model))
    tl.load_state_dict(tl_state_dict(model), strict=False)
    tl.cfg.use_split_qkv_input = True
    tl.cfg.use_attn_result = True
    tl.cfg.use_hook_mlp_in = True
    tl.cfg.ungroup_grouped_query_attention = True
    tl.eval()
    return tl


def _shims(torch, eap_modules):
    """EAP-IG's cuda score buffers on the CPU; its tokenizer replaced by the given ids."""
    zeros = torch.zeros

    def cpu_zeros(*a, device=None, **k):
        return zeros(*a, device="cpu" if device == "cuda" else device, **k)

    torch.zeros = cpu_zeros

    def tokenize_plus(model, inputs, max_length=None):
        tokens = torch.stack(list(inputs)) if isinstance(inputs, (list, tuple)) else inputs
        mask = torch.ones_like(tokens)
        return tokens, mask, mask.sum(1), tokens.shape[1]

    for mod in eap_modules:
        if hasattr(mod, "tokenize_plus"):
            mod.tokenize_plus = tokenize_plus


def _loader(torch, clean, corrupted, answers, wrongs, batch):
    rows = [(torch.as_tensor(c), torch.as_tensor(k), [int(a), int(w)])
            for c, k, a, w in zip(clean, corrupted, answers, wrongs)]  # fmt: skip

    def collate(xs):
        c, k, lab = zip(*xs)
        return list(c), list(k), list(lab)

    return torch.utils.data.DataLoader(rows, batch_size=batch, collate_fn=collate)


def _logit_diff(torch):
    def metric(logits, clean_logits, input_lengths, labels, mean=True, loss=False):
        idx = torch.arange(logits.shape[0])
        last = logits[idx, input_lengths - 1]
        lab = torch.as_tensor(labels)
        r = last[idx, lab[:, 0]] - last[idx, lab[:, 1]]
        r = -r if loss else r
        return r.mean() if mean else r

    return metric


def _timed(fn, repeats: int = 1):
    """(output, first call's seconds, median of `repeats` more calls; with `repeats=0`
    the first call's)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    if repeats == 0:
        return out, first, first
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, first, float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--eap-ig-src", required=True, help="EAP-IG checkout's src directory")
    ap.add_argument("--n", type=int, default=8, help="IOI pairs")
    ap.add_argument("--batch", type=int, default=8, help="pairs per batch (both sides)")
    ap.add_argument("--steps", type=int, default=5, help="EAP-IG steps")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up")
    ap.add_argument(
        "--reference-warmup",
        action="store_true",
        help="warm the reference up too (PyTorch compiles nothing: by default its first "
        "call is the timed one)",
    )
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(args.eap_ig_src).resolve()))
    import jax.numpy as jnp
    import torch
    from eap import attribute as eap_attr
    from eap import evaluate as eap_eval
    from eap import utils as eap_utils
    from eap.graph import Graph as EGraph

    import mechjax as mj
    from mechjax import circuits, metrics, tasks

    torch.set_grad_enabled(True)
    _shims(torch, [eap_attr, eap_eval, eap_utils])
    model = mj.load("smollm2-135m")
    b = tasks.ioi(model.tokenizer, n=args.n, seed=0)
    tl = tl_model(model)
    ref_logits = tl(torch.as_tensor(b.clean)).detach().numpy()
    ours = np.asarray(mj.run(model, jnp.asarray(b.clean)).logits)
    res: dict = {"n": args.n, "batch": args.batch, "steps": args.steps,
                 "tokens": int(b.clean.shape[1]),
                 "logit_parity": float(np.abs(ref_logits - ours).max())}  # fmt: skip
    print(f"TransformerLens vs mechjax logits: max |diff| {res['logit_parity']:.2e}")
    metric = _logit_diff(torch)
    loader = _loader(torch, b.clean, b.corrupted, b.answers, b.wrongs, args.batch)
    eg = EGraph.from_model(tl)

    def ref_scores():
        eg.scores[:] = 0
        eap_attr.attribute(tl, eg, loader, lambda *a: metric(*a, loss=True),
                           "EAP-IG-inputs", ig_steps=args.steps, quiet=True)  # fmt: skip
        return eg.scores.clone().numpy()

    c, k = jnp.asarray(b.clean), jnp.asarray(b.corrupted)
    loss = metrics.Negate(b.logit_diff())

    def our_scores():
        s, _ = circuits.eap_ig(model, c, k, loss, steps=args.steps, batch_size=args.batch,
                               chunk_size=1, scale="eap-ig")  # fmt: skip
        return np.asarray(s)

    ref_repeats = args.repeats if args.reference_warmup else 0
    rs, rfirst, rt = _timed(ref_scores, ref_repeats)
    ms, mfirst, mt = _timed(our_scores, args.repeats)
    g = circuits.graph_of(model)
    # EAP-IG's graph has mechjax's node order (input, a{l}.h{i}..., m{l}; q, k, v, mlp)
    assert rs.shape == ms.shape == g.valid.shape, (rs.shape, ms.shape)
    res["eap_ig"] = {"reference_s": rt, "mechjax_s": mt, "mechjax_compile_s": mfirst - mt,
                     "ratio": rt / mt, "max_abs_diff": float(np.abs(rs - ms).max()),
                     "max_abs_score": float(np.abs(rs).max())}  # fmt: skip
    print(f"EAP-IG: reference {rt:.1f}s, mechjax {mt:.1f}s (+{mfirst - mt:.1f}s compile): "
          f"{rt / mt:.1f}x; max |diff| {res['eap_ig']['max_abs_diff']:.2e} of "
          f"max |score| {res['eap_ig']['max_abs_score']:.2e}")  # fmt: skip

    fr = circuits.MIB_FRACTIONS
    n_edges = int(eg.real_edge_mask.sum())
    pos_metric = lambda *a: metric(*a, mean=False, loss=False)  # noqa: E731

    def ref_curve():
        eg.scores[:] = torch.as_tensor(rs)
        base = eap_eval.evaluate_baseline(tl, loader, pos_metric, quiet=True).mean().item()
        eg.apply_topn(0, True)
        empty = eap_eval.evaluate_graph(tl, eg, loader, pos_metric, quiet=True).mean().item()
        f = []
        for x in fr:
            eg.apply_topn(int(x * n_edges), False, prune=True)
            v = eap_eval.evaluate_graph(tl, eg, loader, pos_metric, quiet=True).mean().item()
            f.append((v - empty) / (base - empty))
        return f

    def our_curve():
        return circuits.faithfulness(model, c, k, b.logit_diff(), rs, g)["f_signed"]

    def our_signed_curve():  # the reference's own work: one ranking, 12 circuits
        return circuits.faithfulness(model, c, k, b.logit_diff(), rs, g,
                                     rankings=["signed"])["f_signed"]  # fmt: skip

    rf, _, rct = _timed(ref_curve, ref_repeats)
    mf, mcfirst, mct = _timed(our_curve, args.repeats)
    mf1, m1first, m1t = _timed(our_signed_curve, args.repeats)
    res["curve"] = {"reference_s": rct, "mechjax_s": mct, "mechjax_compile_s": mcfirst - mct,
                    "ratio": rct / mct, "reference_evaluations": 12, "mechjax_evaluations": 22,
                    "ratio_per_evaluation": (rct / 12) / (mct / 22),
                    "mechjax_one_ranking_s": m1t, "ratio_same_work": rct / m1t,
                    "max_abs_diff_f": float(np.max(np.abs(np.asarray(rf) - np.asarray(mf)))),
                    "max_abs_diff_f_one_ranking": float(np.max(np.abs(np.asarray(rf) - np.asarray(mf1))))}  # fmt: skip
    print(f"faithfulness curve: reference loop {rct:.1f}s (12 evaluations), mechjax {mct:.1f}s "
          f"(22 in one program, +{mcfirst - mct:.1f}s compile): {rct / mct:.1f}x; the same 12 "
          f"circuits {m1t:.1f}s (+{m1first - m1t:.1f}s compile): {rct / m1t:.1f}x; "
          f"max |f diff| {res['curve']['max_abs_diff_f']:.2e}")  # fmt: skip
    try:
        import auto_circuit  # noqa: F401

        res["masks"] = {"auto_circuit": "imports; comparison not written"}
    except Exception as e:  # noqa: BLE001
        res["masks"] = {"auto_circuit": f"does not import here: {type(e).__name__}: {e}"}
    print(f"masks vs auto-circuit: {res['masks']['auto_circuit']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
