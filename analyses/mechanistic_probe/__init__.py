"""`mechjax reproduce mechanistic-probe`: "Towards a Mechanistic Interpretation of Multi-Step
Reasoning Capabilities of Language Models" (Hou, Li, Fei, Stolfo, Zhou, Zeng, Bosselut,
Sachan; EMNLP 2023), the MechanisticProbe, on a GPT-2 config trained here and on SmolLM2.

    mechjax reproduce mechanistic-probe --out DIR [--quick] [--smoke] [--k 1]

Stages (results.json rewritten after each, `"complete": false` until the end):

1. train: a 4-layer GPT-2 config (`models/gpt2.py`) trained from scratch with
   `mechjax.training.train` (optax AdamW, warmup then cosine decay) on the k-th smallest
   task (`tasks.kth_smallest_batch`, every batch a function of the seed and step), loss at
   the last list position (the reference's double softmax, `CrossEntropyLoss(softmax(
   logits))`, with `--double-softmax`; off by default); accuracy on a held-out set.
2. probe: the MechanisticProbe (`mechjax.mechanistic_probe`) on the trained model, on its
   own initialisation (the random-init baseline of S, the paper's "scratch" GPT-2) and on
   an independent random initialisation of the same config; F1 of P1 and P2 overall and
   per layer prefix, S = (F1 - F1_init) / (1 - F1_init), the reference's row split (and
   the split at the example boundary beside it).
3. causal: per-head normalised entropy of the last token's attention averaged over the
   test set, positions in order ("pos") and by the size of the value ("size"); heads
   masked lowest entropy first vs at random (several draws) at 10-90% of the heads, test
   accuracy.
4. smollm2: the same probe (`mechanistic_probe`, statements as token spans, P2 the
   multi-class depth as the reference's ProofWriter probe) on SmolLM2-135M-Instruct and
   on a random initialisation of its config, on ProofWriter-like prompts generated
   offline (`tasks.proof_task`: proofs of depth 1-3 among distractor facts and rules);
   the model's True/False accuracy on the same statements with a provable and an
   unprovable question.

Expected (the paper's abstract and `../shared/reference/methods.md` section 3): the probe
"is able to detect the information of the reasoning tree from the model's attentions for
most examples": S_P1 and S_P2 well above 0 for the trained model, about 0 for random
init, rising over layers; masking low-entropy heads first hurts accuracy much more than
masking at random.

Departures from the paper (report.md says them too): a 4-layer GPT-2 config trained from
scratch on token-id numbers instead of fine-tuned GPT-2 small on GPT-2's number tokens; a
smaller list and value set; SmolLM2-135M on a generated ProofWriter-like task instead of
LLaMA-7B on ProofWriter and ARC, with the last token as the query (the reference averages
or maxes over the question's tokens) and the generic probe's max normalisation.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PERCENTS = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _settings(quick: bool, smoke: bool = False, k: int = 1) -> dict:
    base = {
        "k": k,
        "n_list": 16,
        "n_values": 128,
        "n_layers": 4,
        "d_model": 64,
        "n_heads": 4,
        "batch": 64,
        "lr": 2e-3,
        "warmup": 100,
        "weight_decay": 1e-3,
        "double_softmax": False,
        "seed": 0,
        "random_seed": 1,
        "n_test": 2048,
        "n_probe": 1024,
        "random_draws": 5,
        "smollm_model": "smollm2-135m",
        "n_statements": 8,
    }
    if smoke:  # seconds, for tests: numbers not meaningful
        return {
            **base,
            "n_list": 8,
            "n_values": 32,
            "n_layers": 2,
            "d_model": 16,
            "n_heads": 2,
            "batch": 16,
            "steps": 10,
            "n_test": 64,
            "n_probe": 64,
            "random_draws": 1,
            "smollm_model": None,  # a tiny random Llama config with a word tokenizer
            "n_prompts": 24,
            "n_statements": 6,
        }
    if quick:
        return {
            **base,
            "steps": 800,
            "n_test": 1024,
            "n_probe": 512,
            "random_draws": 2,
            "n_prompts": 48,
        }
    return {**base, "steps": 4000, "n_prompts": 192}


# ---------------------------------------------------------------------- stage 1: train


def _gpt2(settings: dict):
    from mechjax.models import gpt2

    d, h = settings["d_model"], settings["n_heads"]
    return gpt2.Config(
        d_model=d,
        n_layers=settings["n_layers"],
        n_heads=h,
        d_head=d // h,
        d_mlp=4 * d,
        d_vocab=settings["n_values"],
        n_ctx=settings["n_list"],
        tie_embeddings=False,
    )


def _model(params, cfg):
    import mechjax as mj
    from mechjax.io.families import family_of_module

    return mj.Model(params, cfg, family_of_module("gpt2"))


def _data(settings: dict, seed: int, n: int):
    import jax

    from mechjax.analyses.mechanistic_probe.tasks import kth_smallest_batch

    key = jax.random.PRNGKey(seed)
    tokens, answers = kth_smallest_batch(
        key, n, settings["n_list"], settings["n_values"], settings["k"]
    )
    return np.asarray(tokens), np.asarray(answers)


def _train(settings: dict, progress: bool) -> dict:
    """Train from the init of `seed`; (trained params, init params, accuracy, curves)."""
    import jax
    import jax.numpy as jnp
    import optax

    from mechjax import training
    from mechjax.analyses.mechanistic_probe.tasks import kth_smallest_batch
    from mechjax.models import gpt2

    cfg = _gpt2(settings)
    init = gpt2.init(jax.random.PRNGKey(settings["seed"]), cfg)
    s = settings
    make = jax.jit(
        lambda key: kth_smallest_batch(key, s["batch"], s["n_list"], s["n_values"], s["k"])
    )

    def loss_fn(params, batch, key):
        tokens, answers = batch
        logits = gpt2.forward(params, tokens, cfg)[:, -1]
        scores = jax.nn.softmax(logits) if s["double_softmax"] else logits
        logp = jax.nn.log_softmax(scores)
        loss = -jnp.take_along_axis(logp, answers[:, None], axis=1).mean()
        return loss, {"accuracy": (jnp.argmax(logits, -1) == answers).mean()}

    test_tokens, test_answers = (
        jnp.asarray(a) for a in _data(settings, 10_000 + s["seed"], s["n_test"])
    )

    @jax.jit
    def accuracy(params, tokens, answers):
        return (jnp.argmax(gpt2.forward(params, tokens, cfg)[:, -1], -1) == answers).mean()

    acc_fn = lambda p: accuracy(p, test_tokens, test_answers)  # noqa: E731
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, s["lr"], s["warmup"], max(s["steps"], s["warmup"] + 1)
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=s["weight_decay"])
    )
    t0 = time.time()
    res = training.train(
        loss_fn,
        optimizer,
        init,
        lambda key, step: make(key),
        steps=s["steps"],
        seed=s["seed"],
        eval_fn=lambda p: {"test_accuracy": acc_fn(p)},
        eval_every=max(1, s["steps"] // 10),
        progress=progress,
    )
    seconds = time.time() - t0
    history = res.history
    every = max(1, len(history) // 200)
    return {
        "params": res.state.params,
        "init": init,
        "accuracy": float(acc_fn(res.state.params)),
        "train_seconds": round(seconds, 1),
        "loss_curve": [[r["step"], round(r["loss"], 5)] for r in history[::every]],
        "eval_curve": [[r["step"], round(float(r["test_accuracy"]), 5)] for r in res.evals],
    }


# ---------------------------------------------------------------------- stage 2: probe


def _probe_one(model, tokens: np.ndarray, depth: np.ndarray, split: str) -> dict:
    from mechjax import mechanistic_probe as mp

    feats = mp.attention_features(model, tokens, batch_size=256, progress=False)
    r = mp.probe_f1(feats, depth, p2="kth", split=split)
    return {
        "f1_p1": r.f1_p1,
        "f1_p2": r.f1_p2,
        "f1_p1_layers": r.f1_p1_layers.tolist(),
        "f1_p2_layers": r.f1_p2_layers.tolist(),
    }


def _scores(f1: dict, base: dict) -> dict:
    from mechjax.mechanistic_probe import normalized_score

    out = {}
    for p in ("p1", "p2"):
        out[f"s_{p}"] = normalized_score(f1[f"f1_{p}"], base[f"f1_{p}"])
        out[f"s_{p}_layers"] = np.asarray(
            normalized_score(f1[f"f1_{p}_layers"], base[f"f1_{p}_layers"])
        ).tolist()
    return out


def _probe(settings: dict, models: dict, split_names=("reference", "examples")) -> dict:
    """F1 and S of the probe for the trained, init and independent random models."""
    from mechjax import mechanistic_probe as mp

    tokens, _ = _data(settings, 20_000 + settings["seed"], settings["n_probe"])
    depth = mp.kth_smallest_tree(tokens, settings["k"])
    out: dict = {
        "n_examples": int(tokens.shape[0]),
        "useful_per_example": float((depth >= 0).sum(1).mean()),
        "examples_with_repeats": float(np.mean([len(set(r)) < len(r) for r in tokens.tolist()])),
    }
    for split in split_names:
        f1 = {name: _probe_one(m, tokens, depth, split) for name, m in models.items()}
        out[split] = {
            "f1": f1,
            "trained": _scores(f1["trained"], f1["init"]),
            "random": _scores(f1["random"], f1["init"]),
        }
    return out


# ---------------------------------------------------------------------- stage 3: causal


def _accuracy_fn():
    import jax
    import jax.numpy as jnp

    import mechjax as mj

    def acc(model, tokens, answers, hooks):
        logits = mj.run(model, tokens, hooks).logits[:, -1]
        return (jnp.argmax(logits, -1) == answers).mean()

    return jax.jit(acc)


def _causal(settings: dict, model) -> dict:
    """Head entropies and accuracy under head masks (one compiled program for all)."""
    from mechjax import mechanistic_probe as mp

    tokens, answers = _data(settings, 10_000 + settings["seed"], settings["n_test"])
    attn = mp.query_attention(model, tokens, batch_size=256, progress=False)
    ent = {"pos": mp.head_entropy(attn), "size": mp.head_entropy(attn, mp.size_order(tokens))}
    acc = _accuracy_fn()
    cfg = model.config
    ones = np.ones((cfg.n_layers, cfg.n_heads), np.float32)
    run = lambda mask: float(acc(model, tokens, answers, mp.head_mask_hooks(model, mask)))  # noqa: E731
    clean = run(ones)
    curves: dict[str, list] = {"pos": [], "size": []}
    for order in ("pos", "size"):
        curves[order] = [run(mp.head_mask(ent[order], p)) for p in PERCENTS]
    draws = [
        [run(mp.head_mask(ent["pos"], p, order="random", seed=d)) for p in PERCENTS]
        for d in range(settings["random_draws"])
    ]
    return {
        "clean_accuracy": clean,
        "percents": list(PERCENTS),
        "heads_masked": [int(p / 100 * ones.size) + 1 for p in PERCENTS],
        "entropy_pos": ent["pos"].round(4).tolist(),
        "entropy_size": ent["size"].round(4).tolist(),
        "accuracy_min_entropy_pos": curves["pos"],
        "accuracy_min_entropy_size": curves["size"],
        "accuracy_random": np.mean(draws, axis=0).tolist(),
        "accuracy_random_draws": draws,
    }


# ---------------------------------------------------------------------- stage 4: SmolLM2


def _smollm_models(settings: dict):
    """(model, random-init model of its config, encode) ; the smoke run's tiny Llama."""
    import jax

    import mechjax as mj
    from mechjax.io.families import family_of_module
    from mechjax.models import llama

    name = settings["smollm_model"]
    if name is None:
        from mechjax.analyses.mechanistic_probe.tasks import word_encoder

        cfg = llama.Config(
            d_model=32,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            d_head=8,
            d_mlp=48,
            d_vocab=256,
            n_ctx=256,
        )
        fam = family_of_module("llama")
        model = mj.Model(llama.init(jax.random.PRNGKey(5), cfg, scale=0.3), cfg, fam)
        encode = word_encoder(cfg.d_vocab)
    else:
        model = mj.load(name)
        encode = lambda text: model.tokenizer.encode(text, add_bos=False)  # noqa: E731
    rand = mj.Model(
        llama.init(jax.random.PRNGKey(settings["random_seed"]), model.config),
        model.config,
        model.family,
    )
    return model, rand, encode


def _choice_logits(model, normalized: np.ndarray, ids: list[int]) -> np.ndarray:
    """Logits of `ids` from the final norm's normalised input (the RMSNorm gain applied)."""
    w = np.asarray(model.params["ln_final"]["w"], np.float32)
    W_U = np.asarray(model.params["unembed"]["W_U"], np.float32)[:, ids]
    return (normalized * w) @ W_U


def _smollm(settings: dict) -> dict:
    """The generic probe on SmolLM2 and on a random init of its config; True/False accuracy."""
    from mechjax import mechanistic_probe as mp
    from mechjax.analyses.mechanistic_probe.tasks import proof_task
    from mechjax.harvest import harvest

    model, rand, encode = _smollm_models(settings)
    task = proof_task(
        encode, settings["n_prompts"], n_statements=settings["n_statements"], seed=settings["seed"]
    )
    L = model.config.n_layers
    sites = [f"blocks.{l}.attn.hook_pattern" for l in range(L)] + ["ln_final.hook_normalized"]
    ids = [encode(" True")[0], encode(" False")[0]]

    def run(m, tokens, mask, query) -> tuple[np.ndarray, np.ndarray]:
        out = harvest(
            m, tokens, sites, batch_size=8, positions=query, attention_mask=mask, progress=False
        )
        attn = np.stack([out[s] for s in sites[:-1]], axis=1)  # [n, L, H, pos]
        return attn, _choice_logits(m, out["ln_final.hook_normalized"], ids)

    f1: dict = {}
    logits_true = None
    for name, m in (("model", model), ("random", rand)):
        attn, logits = run(m, task.tokens, task.mask, task.query)
        if name == "model":
            logits_true = logits
        feats = mp.normalize_max(mp.pool_spans(attn.mean(2).transpose(0, 2, 1), task.spans))
        r = mp.probe_f1(feats, task.depth, p2="depth")
        f1[name] = {
            "f1_p1": r.f1_p1,
            "f1_p2": r.f1_p2,
            "f1_p1_layers": r.f1_p1_layers.tolist(),
            "f1_p2_layers": r.f1_p2_layers.tolist(),
        }
    assert logits_true is not None
    n_acc = max(2, settings["n_prompts"] // 2)
    _, logits_false = run(
        model, task.tokens_false[:n_acc], task.mask_false[:n_acc], task.query_false[:n_acc]
    )
    says_true = logits_true[:n_acc, 0] > logits_true[:n_acc, 1]
    says_false = logits_false[:, 0] <= logits_false[:, 1]
    by_depth = {
        str(d): float(says_true[task.proof_depth[:n_acc] == d].mean())
        for d in (1, 2, 3)
        if (task.proof_depth[:n_acc] == d).any()
    }
    return {
        "model": settings["smollm_model"] or "tiny random llama (smoke)",
        "n_prompts": int(task.tokens.shape[0]),
        "n_statements": settings["n_statements"],
        "mean_tokens": float(task.mask.sum(1).mean()),
        "example": task.texts[0],
        "f1": f1,
        "scores": _scores(f1["model"], f1["random"]),
        "accuracy_true_false": float((says_true.sum() + says_false.sum()) / (2 * n_acc)),
        "says_true_on_provable": float(says_true.mean()),
        "says_false_on_unprovable": float(says_false.mean()),
        "says_true_on_provable_by_depth": by_depth,
        "n_accuracy": int(n_acc),
    }


# ---------------------------------------------------------------------- the run


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    smoke: bool = False,
    k: int = 1,
    double_softmax: bool = False,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Run the four stages; write results.json, figures and report.md into `out_dir`."""
    import jax

    from mechjax.analyses.mechanistic_probe.report import write_figures, write_report
    from mechjax.analyses.stages import Stages
    from mechjax.models import gpt2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**_settings(quick, smoke, k), "double_softmax": double_softmax}
    if not 1 <= k < settings["n_list"]:
        raise ValueError(
            f"k must be in [1, {settings['n_list']}) (k = 0 leaves P2 a single class), got {k}"
        )
    meta: dict[str, Any] = {"settings": {**settings, "quick": quick, "smoke": smoke}}
    t0 = time.time()
    r: dict = {}
    with Stages(out / "results.json", 4, progress=progress, log=log) as stages:
        stages.save(meta)
        with stages.stage("train"):
            trained = _train(settings, stages.show)
        r["train"] = {k_: v for k_, v in trained.items() if k_ not in ("params", "init")}
        log(
            f"  trained: test accuracy {trained['accuracy']:.4f} in {trained['train_seconds']:.0f}s"
        )
        stages.save({"train": r["train"]})
        cfg = _gpt2(settings)
        models = {
            "trained": _model(trained["params"], cfg),
            "init": _model(trained["init"], cfg),
            "random": _model(gpt2.init(jax.random.PRNGKey(settings["random_seed"]), cfg), cfg),
        }
        with stages.stage("probe"):
            r["probe"] = _probe(settings, models)
        ref = r["probe"]["reference"]
        log(
            f"  S_P1 {ref['trained']['s_p1']:.3f}, S_P2 {ref['trained']['s_p2']:.3f}; random init "
            f"{ref['random']['s_p1']:.3f}, {ref['random']['s_p2']:.3f}"
        )
        stages.save({"probe": r["probe"]})
        with stages.stage("causal"):
            r["causal"] = _causal(settings, models["trained"])
        stages.save({"causal": r["causal"]})
        with stages.stage("smollm2"):
            r["smollm2"] = _smollm(settings)
        sm = r["smollm2"]["scores"]
        log(f"  SmolLM2: S_P1 {sm['s_p1']:.3f}, S_P2 {sm['s_p2']:.3f}")
        meta["seconds"] = round(time.time() - t0, 1)
        top = {
            "s_p1": ref["trained"]["s_p1"],
            "s_p2": ref["trained"]["s_p2"],
            "s_p1_random": ref["random"]["s_p1"],
            "s_p2_random": ref["random"]["s_p2"],
            "accuracy": r["train"]["accuracy"],
            "smollm2_s_p1": sm["s_p1"],
            "smollm2_s_p2": sm["s_p2"],
        }
        final = stages.finish({**top, **r, **meta})
    write_figures(out, final)
    write_report(out, final)
    log(f"wrote {out / 'report.md'} and {out / 'results.json'} in {meta['seconds']:.0f}s")
    return final


def build_parser() -> argparse.ArgumentParser:
    from mechjax.analyses.stages import reproduction_parser

    ap = reproduction_parser(
        "mechanistic-probe",
        "Reproduce the MechanisticProbe (Hou et al., EMNLP 2023).",
        quick_help="fewer training steps, examples and prompts (minutes)",
    )
    ap.add_argument("--k", type=int, default=1, help="the task's k (0-based: 1 = second smallest)")
    ap.add_argument(
        "--double-softmax",
        action="store_true",
        help="the reference's loss quirk: cross-entropy of softmax(logits)",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce mechanistic-probe --out DIR [--quick] [--smoke] [--k K]`."""
    from mechjax.analyses.stages import reproduction_main

    return reproduction_main(
        argv, build_parser(), reproduce, k="k", double_softmax="double_softmax"
    )


if __name__ == "__main__":
    raise SystemExit(main())
