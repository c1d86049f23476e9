"""AtP against exact activation patching on SmolLM2 IOI (s2_io_flip), per head and per MLP.

Noising: the corrupted activation of one node (a head's z at one position, or one MLP's
output at one position) is patched into the clean run; AtP estimates every such effect
from one forward and one backward pass. Prints Pearson r and the figures used.

    python scripts/atp_vs_exact.py [--n-pairs 4]
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp
import numpy as np

import mechjax as mj
from mechjax import tasks
from mechjax.attribution import atp
from mechjax.metrics import LogitDiff
from mechjax.patching import patch_sweep


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-pairs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model = mj.load("smollm2-135m")
    batch = tasks.ioi(model.tokenizer, args.n_pairs, seed=args.seed, counterfactual="s2_io_flip")
    metric = LogitDiff(jnp.asarray(batch.answers), jnp.asarray(batch.wrongs))
    clean, corrupt = jnp.asarray(batch.clean), jnp.asarray(batch.corrupted)
    t0 = time.perf_counter()
    est = atp(model, clean, corrupt, metric, kinds=("z", "mlp_out"), mode="noise")
    t_atp = time.perf_counter() - t0
    for kind, site in (("z", "attn.hook_z"), ("mlp_out", "hook_mlp_out")):
        t0 = time.perf_counter()
        exact = patch_sweep(model, clean, corrupt, metric, kind, mode="noise")
        t_exact = time.perf_counter() - t0
        g = np.asarray(exact.grid) - float(exact.clean_metric)  # effect of each patch
        a = np.stack([np.asarray(est[f"blocks.{l}.{site}"]) for l in range(model.config.n_layers)])
        a = a.reshape(g.shape)
        r = np.corrcoef(a.ravel(), g.ravel())[0, 1]
        top = np.argsort(-np.abs(g.ravel()))[:20]
        r_top = np.corrcoef(a.ravel()[top], g.ravel()[top])[0, 1]
        print(
            f"{kind:8s} nodes {g.size:5d}  Pearson r {r:.3f}  (top-20 by |exact| r {r_top:.3f})  "
            f"exact sweep {t_exact:.1f}s, AtP (all kinds) {t_atp:.1f}s"
        )


if __name__ == "__main__":
    main()
