"""The `mechjax` command line: one command, one subcommand per job.

    mechjax fetch smollm2-135m            # download (offline package registry) and verify
    mechjax info smollm2-135m             # config, parameter count, sites
    mechjax run smollm2-135m "prompt"     # top-k next tokens with probabilities
    mechjax generate smollm2-135m "prompt" -n 40 --chat   # streamed, KV cache
    mechjax patch smollm2-135m --task ioi --site resid_pre --out grid.npz
    mechjax attribute smollm2-135m --task ioi --method eap-ig
    mechjax reproduce induction-emergence --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

_REPRODUCTIONS = {
    "induction-emergence": "mechjax.analyses.induction",
    "arithmetic-cma": "mechjax.analyses.arithmetic_cma",
}


def _cmd_fetch(args) -> int:
    from mechjax import registry

    print(registry.resolve(args.model))
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
    from mechjax import registry

    print("registered models (fetched offline from the package index, sha256-verified):")
    for e in registry.list_models():
        print(f"  {e.name:14s} {e.approx_size:>7s}  {e.architecture:8s} {e.description}")
        extra = "".join(f", {Path(m).name}" for m, _ in e.sidecars)
        print(f"  {'':14s} source: {', '.join(e.packages)} -> {e.filename}{extra}")
    return 0


def _cmd_info(args) -> int:
    import dataclasses

    import mechjax as mj

    if args.model is None:
        return _list_models()
    model = mj.load(args.model)
    cfg = dataclasses.asdict(model.config)
    print(f"model: {args.model}  (family: {model.family.name})")
    for k, v in cfg.items():
        print(f"  {k:16s} {v}")
    tied = " (W_U tied to W_E, counted once)" if getattr(model.config, "tie_embeddings", False) else ""
    print(f"parameters: {_param_count(model):,}{tied}")
    sites = model.sites
    print(f"sites: {len(sites)}")
    for line in (sites if args.all_sites else _site_summary(sites)):
        print(f"  {line}")
    return 0


def _cmd_run(args) -> int:
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
    logits = jax.jit(mj.run)(model, np.asarray([ids], np.int32)).logits[0, -1]
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


def _cmd_reproduce(args, rest: list[str]) -> int:
    import importlib

    mod = importlib.import_module(_REPRODUCTIONS[args.name])
    return mod.main(rest) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mechjax", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch", help="fetch and verify a registered model")
    f.add_argument("model")
    f.set_defaults(fn=_cmd_fetch)

    i = sub.add_parser("info", help="config, parameter count and sites of a model")
    i.add_argument("model", nargs="?", default=None,
                   help="registry name, .gguf file or HF checkpoint directory (none: list models)")
    i.add_argument("--all-sites", action="store_true", help="list every site, not a summary")
    i.set_defaults(fn=_cmd_info)

    r = sub.add_parser("run", help="top-k next tokens for a prompt")
    r.add_argument("model")
    r.add_argument("prompt")
    r.add_argument("--top-k", type=int, default=10)
    r.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=_cmd_run)

    from mechjax import cli_generate, cli_patch

    cli_generate.add_commands(sub)
    cli_patch.add_commands(sub)

    rp = sub.add_parser("reproduce", help="run a paper reproduction (see analyses/)")
    rp.add_argument("name", choices=sorted(_REPRODUCTIONS))
    rp.set_defaults(fn=None)
    return p


def main(argv: list[str] | None = None) -> int:
    from mechjax.errors import MechjaxError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "reproduce":
            return _cmd_reproduce(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.fn(args)
    except MechjaxError as e:
        print(f"mechjax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
