"""`mechjax reproduce NAME`: run one paper reproduction of `mechjax.analyses`."""

from __future__ import annotations

REPRODUCTIONS = {
    "induction-emergence": "mechjax.analyses.induction",
    "arithmetic-cma": "mechjax.analyses.arithmetic_cma",
}


def cmd_reproduce(args, rest: list[str]) -> int:
    import importlib

    mod = importlib.import_module(REPRODUCTIONS[args.name])
    return mod.main(rest) or 0
