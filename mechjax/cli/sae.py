"""`mechjax sae train|eval`: train a sparse autoencoder at a site, or evaluate one.

    mechjax sae train smollm2-135m --site blocks.15.hook_resid_post --arch topk \\
        --d-sae 4608 --k 32 --steps 500 --out runs/topk      # SAELens dir in runs/topk/sae
    mechjax sae eval runs/topk/sae smollm2-135m               # FVU, CE recovered, L0, ...

Training tokens come from the offline English corpus, a text/JSONL file or directory
(`--tokens PATH`), or the model's own samples (`--tokens samples`); activations are
harvested once into memory (`--store memory`), to disk shards (`--store disk`), or made
inside the training step (`--store none`). A rerun with the same --out resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    """Register `sae train` and `sae eval` on the `mechjax` command's subparsers."""
    from mechjax.sae.architectures import ARCHITECTURES

    s = subparsers.add_parser(
        "sae",
        help="train or evaluate a sparse autoencoder at a site",
        description=(__doc__ or "").split("\n\n")[0],
    )
    sub = s.add_subparsers(dest="sae_command", required=True, metavar="ACTION",
                           help="train: fit an SAE; eval: measure one")  # fmt: skip
    t = sub.add_parser("train", help="train an SAE (or resume one) and save it in SAELens format")
    t.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    t.add_argument(
        "--site", required=True, help="the site it reads, e.g. blocks.15.hook_resid_post"
    )
    t.add_argument("--arch", choices=ARCHITECTURES, default="topk", help="SAE architecture")
    t.add_argument("--d-sae", type=int, default=None, help="latents (default: 8 x the site width)")
    t.add_argument("--k", type=int, default=32, help="active latents of the TopK kinds")
    t.add_argument("--steps", type=int, default=500, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=4096, help="activation rows (tokens) per step")
    t.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate")
    t.add_argument("--warmup", type=int, default=50, help="linear warmup steps")
    t.add_argument("--decay", choices=("none", "linear", "cosine"), default="linear",
                   help="decay over the last fifth of the steps")  # fmt: skip
    t.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (relu, gated)")
    t.add_argument("--l0", type=float, default=1e-3, help="L0 coefficient (jumprelu)")
    t.add_argument("--tokens", default="corpus",
                   help="'corpus' (offline English text), 'samples' (the model's own), or a text/JSONL file or directory")  # fmt: skip
    t.add_argument("--ctx-len", type=int, default=128, help="tokens per sequence")
    t.add_argument("--n-chunks", type=int, default=None, help="sequences to use (default: all)")
    t.add_argument("--store", choices=("memory", "disk", "none"), default="memory",
                   help="harvest activations once (memory / disk shards) or make them in the step")  # fmt: skip
    t.add_argument("--eval-every", type=int, default=100, help="held-out evaluation interval")
    t.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint interval")
    t.add_argument("--seed", type=int, default=0, help="seed of init, shuffles and corpus order")
    t.add_argument("--out", required=True, help="run folder (checkpoints, logs, sae/, eval.json)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("eval", help="FVU, CE loss recovered, KL, L0, dead/dense fractions")
    e.add_argument("sae", help="a SAELens directory or Gemma Scope params.npz")
    e.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    e.add_argument("--site", default=None, help="the site (default: the one the SAE records)")
    e.add_argument("--tokens", default="corpus", help="as for train")
    e.add_argument("--ctx-len", type=int, default=128, help="tokens per sequence")
    e.add_argument("--n-chunks", type=int, default=64, help="sequences to evaluate on")
    e.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    e.add_argument("--seed", type=int, default=1, help="corpus order seed")
    e.add_argument("--out", default=None, help="also write the metrics as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_eval)
    from mechjax.cli.main import HelpFormatter

    for parser in sub.choices.values():
        parser.formatter_class = HelpFormatter


def _metrics_line(ev: dict) -> str:
    keys = ("fvu", "explained_variance", "ce_recovered", "ce_clean", "ce_sae", "ce_zero", "kl",
            "l0", "cosine", "dead_frac", "dense_frac")  # fmt: skip
    return "\n".join(f"{k:20s} {ev[k]:.4f}" for k in keys)


def cmd_train(args: argparse.Namespace) -> int:
    import mechjax as mj
    from mechjax import sae as S
    from mechjax.harvest import site_width

    model = mj.load(args.model)
    if args.site not in model.sites:
        raise mj.SiteError(f"site {args.site!r} is not a site of {args.model} (see `mechjax info`)")
    out = Path(args.out)
    rows = S.store.token_rows(
        model, args.tokens, ctx_len=args.ctx_len, n_chunks=args.n_chunks, seed=args.seed
    )
    n_eval = max(1, len(rows) // 10)
    train_rows, eval_rows = rows[n_eval:], rows[:n_eval]
    width = site_width(model, args.site)
    d_sae = args.d_sae or 8 * width
    cfg = S.SAETrainConfig(arch=args.arch, d_sae=d_sae, k=args.k, steps=args.steps,
                           batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                           decay=args.decay, l1=args.l1, l0=args.l0, seed=args.seed)  # fmt: skip
    show = not args.quiet
    if args.store == "none":
        source = S.TokenSource(model, train_rows, args.site)
    else:
        where = out / "activations" if args.store == "disk" else None
        source = S.ActivationStore.harvest(
            model, train_rows, args.site, out_dir=where, progress=show
        )
    meta = S.SAEMeta(model_name=args.model, hook_name=args.site, context_size=args.ctx_len,
                     dataset_path=str(args.tokens))  # fmt: skip
    res = S.train_sae(source, cfg, meta=meta, out_dir=out, eval_every=args.eval_every,
                      checkpoint_every=args.checkpoint_every, progress=show)  # fmt: skip
    S.save(res.sae, out / "sae")
    ev = S.evaluate(model, res.sae, eval_rows, progress=show)
    _write(out / "eval.json", ev)
    print(f"saved {out / 'sae'} ({res.sae!r}); held-out evaluation on {ev['n_tokens']} tokens:")
    print(_metrics_line(ev))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import mechjax as mj
    from mechjax import sae as S

    sae = S.load(args.sae)
    model = mj.load(args.model)
    rows = S.store.token_rows(
        model, args.tokens, ctx_len=args.ctx_len, n_chunks=args.n_chunks, seed=args.seed
    )
    ev = S.evaluate(
        model, sae, rows, site=args.site, batch_size=args.batch_size, progress=not args.quiet
    )
    print(f"{sae!r} on {ev['n_tokens']} tokens:")
    print(_metrics_line(ev))
    if args.out:
        _write(Path(args.out), ev)
    return 0


def _write(path: Path, ev: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in ev.items()}
    path.write_text(json.dumps(clean) + "\n")


if __name__ == "__main__":  # pragma: no cover
    from mechjax.cli.main import main

    sys.exit(main(["sae", *sys.argv[1:]]))
