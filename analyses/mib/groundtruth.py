"""A transformer whose circuit is known, and each method's AUROC against it (MIB's
InterpBench measure, `MIB_circuit_track/evaluation.py:evaluate_area_under_roc`).

MIB scores methods against InterpBench, a model trained (SIIT) to implement a given IOI
circuit. Offline, the analogue is an attention-only two-layer GPT-2-style transformer
(no MLP: `d_mlp = 0`, so the MLP nodes carry only their bias and no signal) trained with
`mechjax.training` on induction (random tokens repeated once). A two-layer attention-only
model can only do induction one way (Olsson et al. 2022): a previous-token head in layer 0
writes "the token before me", an induction head in layer 1 keys on it (K-composition),
queries with the current token and copies the attended token into the logits. The heads
that play those roles are read from the attention patterns (not from any attribution
method), and the ground-truth circuit is their edges:

    input -> prev<q>, input -> prev<k>, input -> prev<v>,      (the previous-token head)
    prev -> ind<k>, input -> ind<q>, input -> ind<v>, ind -> logits

for the layer-0 head with the highest mean attention to the previous position (`prev`,
with any other above `THRESHOLD`) and the layer-1 head with the highest mean attention
to the token after the query's earlier occurrence (`ind`, likewise). The clean prompt is R R[:-1]; the corrupted one replaces the first
R (`mechjax.tasks.induction`), so the answer is no longer predictable.

The random ranking's CPR and CMD are measured on this model too (MIB's expected 0.25 and
0.75 for a ranking that knows nothing). The random AUROC is the mean over `N_RANDOM`
rankings with its spread (`random_auroc`): on a 46-edge graph one random ranking's AUROC
scatters by about 0.1 around 0.5 (MIB's recipe adds a few hundredths: greedy circuits,
pruning, the area taken from the first fraction on), so a single draw says little.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

THRESHOLD = 0.4
N_RANDOM = 200  # random rankings behind the random AUROC (host-side, about 2 s)
SETTINGS = {
    "smoke": {
        "steps": 400,
        "batch": 32,
        "d_vocab": 24,
        "half": 6,
        "n": 16,
        "mask_steps": 20,
        "n_heads": 2,
    },
    "quick": {
        "steps": 1500,
        "batch": 32,
        "d_vocab": 32,
        "half": 8,
        "n": 32,
        "mask_steps": 60,
        "n_heads": 2,
    },
    "full": {
        "steps": 3000,
        "batch": 64,
        "d_vocab": 48,
        "half": 10,
        "n": 64,
        "mask_steps": 150,
        "n_heads": 2,
    },
}


def config(s: dict):
    from mechjax.models import gpt2

    return gpt2.Config(
        d_model=64, n_layers=2, n_heads=s["n_heads"], d_head=64 // s["n_heads"], d_mlp=0,
        d_vocab=s["d_vocab"],
        n_ctx=2 * s["half"], tie_embeddings=False,
    )  # fmt: skip


def train_model(s: dict, seed: int = 0, progress: bool = False):
    """The trained attention-only model (`mj.Model`) and its final induction loss.

    Training sequences are R then a random rotation of R (the induction-emergence
    reproduction's task), so the distance to a token's earlier occurrence varies and a
    head reading a fixed offset cannot solve it: induction is the only way.
    """
    import mechjax as mj
    from mechjax import training
    from mechjax.analyses.induction.standard import induction_batch
    from mechjax.io.families import family_of_module
    from mechjax.models import gpt2

    cfg = config(s)
    half = s["half"]

    def loss_fn(params, batch, key):
        tokens, source = batch
        logits = gpt2.forward(params, tokens, cfg)[:, half:-1]  # predicts tokens half+1..
        lp = jax.nn.log_softmax(logits, -1)
        nll = -jnp.take_along_axis(lp, tokens[:, half + 1 :, None], -1)[..., 0]
        w = (source >= 0).astype(nll.dtype)  # where induction predicts the next token
        loss = (nll * w).sum() / w.sum()
        return loss, {"loss": loss}

    params = gpt2.init(jax.random.PRNGKey(seed), cfg, scale=0.1)
    res = training.train(
        loss_fn, optax.adam(3e-3), params,
        lambda k, _: induction_batch(k, s["batch"], half, s["d_vocab"]),
        steps=s["steps"], seed=seed, progress=progress,
    )  # fmt: skip
    model = mj.Model(res.state.params, cfg, family_of_module("gpt2"))
    return model, float(res.history[-1]["loss"])


def induction_pairs(d_vocab: int, n: int, half: int, seed: int):
    """Clean R R[:-1] (answer R[-1]) and corrupted R' R'[:-1] (answer R'[-1], the wrong
    token): the corrupted prompt flips the answer, as MIB's counterfactuals do, so the
    empty circuit is the floor of the logit difference."""
    from mechjax.tasks import TaskBatch

    rng = np.random.RandomState(seed)
    r, r2 = rng.randint(0, d_vocab, (n, half)), rng.randint(0, d_vocab, (n, half))
    r2[:, -1] = np.where(r2[:, -1] == r[:, -1], (r[:, -1] + 1) % d_vocab, r2[:, -1])
    clean = np.concatenate([r, r[:, :-1]], 1).astype(np.int32)
    corrupted = np.concatenate([r2, r2[:, :-1]], 1).astype(np.int32)
    end = np.full(n, 2 * half - 2, np.int32)
    return TaskBatch(clean, corrupted, r[:, -1].astype(np.int32), r2[:, -1].astype(np.int32),
                     {"end": end}, (), (), task="induction-pairs")  # fmt: skip


def head_roles(model, clean: np.ndarray, half: int) -> dict:
    """Previous-token and induction scores of every head, from the clean prompts."""
    import mechjax as mj

    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layers)]
    cache = mj.run(model, jnp.asarray(clean), capture=names).cache
    p0 = np.asarray(cache[names[0]])  # [b, h, q, k]
    p1 = np.asarray(cache[names[1]])
    q = np.arange(1, p0.shape[-1])
    prev = p0[:, :, q, q - 1].mean((0, 2))
    q2 = np.arange(half, p1.shape[-1])  # second copy: token at q repeats q - half
    ind = p1[:, :, q2, q2 - half + 1].mean((0, 2))
    return {"prev_token": prev.tolist(), "induction": ind.tolist()}


def truth_circuit(graph, roles: dict) -> np.ndarray:
    """The ground-truth edges (module docstring) as an [n_src, n_dst] mask."""
    prev = _heads(roles["prev_token"])
    ind = _heads(roles["induction"])
    t = np.zeros(graph.valid.shape, bool)
    S, D = graph.src.index, graph.dst.index
    for p in prev:
        for s in "qkv":
            t[S("input"), D(f"a0.h{p}<{s}>")] = True
    for i in ind:
        t[S("input"), D(f"a1.h{i}<q>")] = t[S("input"), D(f"a1.h{i}<v>")] = True
        t[S(f"a1.h{i}"), D("logits")] = True
        for p in prev:
            t[S(f"a0.h{p}"), D(f"a1.h{i}<k>")] = True
    return t


def _heads(score) -> list[int]:
    """The best-scoring head and any other above `THRESHOLD`."""
    best = int(np.argmax(score))
    return sorted({best} | {h for h, x in enumerate(score) if x > THRESHOLD})


def method_scores(model, batch, metric, methods, mask_steps: int) -> dict[str, Any]:
    """Edge scores of every method on the induction pairs (masks: the 10% target)."""
    from mechjax import circuits
    from mechjax.circuits import masks as M

    c, k = jnp.asarray(batch.clean), jnp.asarray(batch.corrupted)
    out: dict[str, Any] = {}
    for m in methods:
        if m == "random":
            g = circuits.graph_of(model)
            out[m] = np.random.RandomState(0).rand(*g.valid.shape) * g.valid
        elif m == "eap":
            out[m] = circuits.eap(model, c, k, metric)[0]
        elif m == "eap_ig_inputs":
            out[m] = circuits.eap_ig(model, c, k, metric, steps=5)[0]
        elif m == "eap_ig_activations":
            out[m] = circuits.eap_ig(model, c, k, metric, steps=5, variant="activations")[0]
        elif m == "clean_corrupted":
            out[m] = circuits.clean_corrupted(model, c, k, metric)[0]
        elif m == "ifr":
            out[m] = circuits.information_flow_routes(model, c)[0]
        elif m == "masks":
            cfg = M.MaskConfig(steps=mask_steps, batch_size=min(16, len(batch)))
            res = M.train_masks(model, c, k, [0.1], config=cfg)
            out[m] = M.keep_probability(res.log_alpha[0], cfg)
        else:
            raise ValueError(f"unknown method {m!r}")
    return {m: np.asarray(v) for m, v in out.items()}


def run(s: dict, methods, log=print, seed: int = 0) -> dict:
    """Train, find the heads, score every method, AUROC against the truth; random CPR."""
    from mechjax import circuits

    model, loss = train_model(s, seed)
    log(f"ground-truth model: induction loss {loss:.3f} after {s['steps']} steps")
    batch = induction_pairs(s["d_vocab"], s["n"], s["half"], seed + 1)
    metric = batch.logit_diff()
    roles = head_roles(model, batch.clean, s["half"])
    graph = circuits.graph_of(model)
    truth = truth_circuit(graph, roles)
    scores = method_scores(model, batch, metric, methods, s["mask_steps"])
    auc = {}
    for m, sc in scores.items():
        if m == "random":
            auc[m] = random_auroc(graph, truth)
        else:
            a = circuits.auroc(sc, graph, truth, absolute=m != "masks")
            auc[m] = {"auroc": a["auroc"], "rank_auroc": a["rank_auroc"]}
        log(f"  {m}: AUROC {auc[m]['auroc']:.3f} (full ROC {auc[m]['rank_auroc']:.3f})")
    rand = random_faithfulness(model, batch, metric, n_rankings=5)
    return {
        "train_loss": loss,
        "roles": roles,
        "n_truth_edges": int(truth.sum()),
        "n_edges": graph.n_edges,
        "auroc": auc,
        "random": rand,
    }


def random_auroc(graph, truth, n: int = N_RANDOM, seed: int = 0) -> dict:
    """AUROC (MIB's and the full ROC's) of `n` uniform random rankings: mean and sd."""
    from mechjax import circuits

    rng = np.random.RandomState(seed)
    a, r = [], []
    for _ in range(n):
        out = circuits.auroc(rng.rand(*graph.valid.shape) * graph.valid, graph, truth)
        a.append(out["auroc"])
        r.append(out["rank_auroc"])
    return {"auroc": float(np.mean(a)), "rank_auroc": float(np.mean(r)),
            "auroc_sd": float(np.std(a)), "rank_auroc_sd": float(np.std(r)), "n": n}  # fmt: skip


def random_faithfulness(model, batch, metric, n_rankings: int = 5, seed: int = 0) -> dict:
    """CPR and CMD of random rankings (mean over `n_rankings` draws)."""
    from mechjax import circuits

    g = circuits.graph_of(model)
    c, k = jnp.asarray(batch.clean), jnp.asarray(batch.corrupted)
    rng = np.random.RandomState(seed)
    cprs, cmds, fs = [], [], []
    for _ in range(n_rankings):
        sc = rng.randn(*g.valid.shape) * g.valid
        r = circuits.faithfulness(model, c, k, metric, sc, g)
        cprs.append(r["cpr"])
        cmds.append(r["cmd"])
        fs.append(r["f_signed"])
    return {"cpr": float(np.mean(cprs)), "cmd": float(np.mean(cmds)), "cpr_each": cprs,
            "cmd_each": cmds, "f_signed_each": fs}  # fmt: skip
