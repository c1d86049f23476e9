"""Benchmark: learned edge masks in mechjax against auto-circuit's subnetwork probing, on
SmolLM2-135M IOI pairs, same weights, same token ids, same number of training steps.

mechjax's `circuits.masks.train_masks` trains one hard-concrete edge mask per target
density, all targets in one compiled program; auto-circuit's
`subnetwork_probing_prune_scores` (hard concrete, KL to the clean run, `circuit_size`
for the target) trains one mask per call, so its side is one call per target. Both
train for --steps steps over the same --n pairs in batches of --batch, at the same
targets (--targets fractions of the edges; MIB's ten by default).

The two objectives are alike, not equal (both KL to the clean run with a size term;
auto-circuit ablates with the token-wise mean of the corrupted run, mechjax with the
corrupted run itself): the comparison is of the cost of a training step, and the masks
themselves are not compared.

auto-circuit 1.0.1 is written against TransformerLens 1.x and needs an environment of
its own (not the project's, not .venv-bench's TransformerLens 4):

    python -m venv .venv-ac && .venv-ac/bin/pip install torch==2.13.0 \\
        "transformer-lens<2" "transformers<4.40" "huggingface_hub<0.24" auto-circuit==1.0.1 \\
        attrs typeguard && .venv-ac/bin/pip install -e .
    .venv-ac/bin/python scripts/bench_masks.py --json out.json

The TransformerLens model is built from mechjax's dequantized SmolLM2 weights with every
key/value head repeated for its query heads (TransformerLens 1.x has no ungrouped-GQA
option, and the edge graphs of both sides have one q, k and v input per query head);
its logits are checked against mechjax's first. Times are wall seconds, both sides in
this process on the same CPU threads: mechjax's after a warm-up call (its compile,
reported apart), auto-circuit's first call (PyTorch compiles nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def tl_model_mha(model):
    """A TransformerLens 1.x HookedTransformer with mechjax's SmolLM2 weights, grouped
    key/value heads repeated per query head (the same function)."""
    from transformer_lens import HookedTransformer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_circuits import tl_config, tl_state_dict

    tl = HookedTransformer(tl_config(model, grouped=False))
    tl.load_state_dict(tl_state_dict(model, grouped=False), strict=False)
    # what auto-circuit's factorized (edge-level) graph reads
    tl.set_use_attn_result(True)
    tl.set_use_split_qkv_input(True)
    tl.set_use_hook_mlp_in(True)
    tl.eval()
    return tl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="IOI pairs")
    ap.add_argument("--batch", type=int, default=8, help="pairs per step (both sides)")
    ap.add_argument("--steps", type=int, default=8, help="training steps per target")
    ap.add_argument("--targets", type=float, nargs="+", default=None,
                    help="edge fractions (default: MIB's ten)")  # fmt: skip
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    import jax.numpy as jnp
    import torch
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune_algos.subnetwork_probing import subnetwork_probing_prune_scores
    from auto_circuit.utils.graph_utils import patchable_model

    import mechjax as mj
    from mechjax import circuits, tasks
    from mechjax.circuits import masks as M

    if not hasattr(torch.optim, "adam"):  # auto-circuit calls torch.optim.adam.Adam
        import types

        torch.optim.adam = types.SimpleNamespace(Adam=torch.optim.Adam)  # type: ignore[attr-defined]
    targets = args.targets or list(circuits.MIB_FRACTIONS)
    model = mj.load("smollm2-135m")
    b = tasks.ioi(model.tokenizer, n=args.n, seed=0)
    tl = tl_model_mha(model)
    ref_logits = tl(torch.as_tensor(b.clean)).detach().numpy()
    ours = np.asarray(mj.run(model, jnp.asarray(b.clean)).logits)
    res: dict = {"n": args.n, "batch": args.batch, "steps": args.steps, "targets": targets,
                 "tokens": int(b.clean.shape[1]),
                 "logit_parity": float(np.abs(ref_logits - ours).max())}  # fmt: skip
    print(f"TransformerLens vs mechjax logits: max |diff| {res['logit_parity']:.2e}")

    ds = PromptDataset(
        torch.as_tensor(b.clean),
        torch.as_tensor(b.corrupted),
        [torch.as_tensor([int(a)]) for a in b.answers],
        [torch.as_tensor([int(w)]) for w in b.wrongs],
    )
    loader = PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=args.batch)
    # epochs over a loader of n / batch batches: steps = epochs * batches
    n_batches = len(loader)
    epochs = max(1, args.steps // n_batches)
    pm = patchable_model(tl, factorized=True, slice_output="last_seq", separate_qkv=True,
                         device=torch.device("cpu"))  # fmt: skip
    n_edges_ac = int(pm.n_edges)

    t0 = time.perf_counter()
    for frac in targets:
        subnetwork_probing_prune_scores(
            pm, loader, None, learning_rate=0.1, epochs=epochs, regularize_lambda=10,
            mask_fn="hard_concrete", circuit_size=max(1, int(frac * n_edges_ac)),
            faithfulness_target="kl_div",
        )  # fmt: skip
    ref_s = time.perf_counter() - t0

    cfg = M.MaskConfig(steps=epochs * n_batches, batch_size=args.batch)
    c, k = jnp.asarray(b.clean), jnp.asarray(b.corrupted)

    def ours_fn():
        r = M.train_masks(model, c, k, targets, config=cfg)
        r.log_alpha.block_until_ready()
        return r

    t0 = time.perf_counter()
    ours_fn()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_fn()
    our_s = time.perf_counter() - t0
    g = circuits.graph_of(model)
    res["masks"] = {"reference_s": ref_s, "mechjax_s": our_s, "mechjax_compile_s": first - our_s,
                    "ratio": ref_s / our_s, "steps_per_target": epochs * n_batches,
                    "n_edges_reference": n_edges_ac, "n_edges_mechjax": int(g.n_edges)}  # fmt: skip
    print(f"masks ({len(targets)} targets x {epochs * n_batches} steps): auto-circuit "
          f"{ref_s:.1f}s, mechjax {our_s:.1f}s (+{first - our_s:.1f}s compile): "
          f"{ref_s / our_s:.1f}x; edges {n_edges_ac} (auto-circuit) vs {g.n_edges}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
