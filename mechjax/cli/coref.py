"""`mechjax eval coref KEY RESPONSE`: score a CoNLL-2012 response file against its key.

The scores of the official reference scorer (MUC, B-cubed, CEAF-m, CEAF-e, BLANC), LEA,
mention identification and the CoNLL average (`mechjax.evals.coref`), summed over the
key's documents before the ratios; `--json` prints them as JSON.
"""

from __future__ import annotations

import json
import sys


def add_to(sub) -> None:
    """Add the `coref` parser to the `eval` subcommands."""
    c = sub.add_parser(
        "coref",
        help="CoNLL coreference scores of a response file against a key (CoNLL-2012 format)",
        description=(__doc__ or "").split("\n\n")[1],
    )
    c.add_argument("key", help="the gold CoNLL-2012 file")
    c.add_argument("response", help="the system's CoNLL-2012 file (same document names)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(fn=cmd_coref)


NAMES = {
    "mentions": "mentions",
    "muc": "MUC",
    "bcub": "B-cubed",
    "ceafm": "CEAF-m",
    "ceafe": "CEAF-e",
    "blanc": "BLANC",
    "lea": "LEA",
    "conll": "CoNLL F1",
}


def cmd_coref(args) -> int:
    from mechjax.errors import InputError
    from mechjax.evals import conll, coref

    try:
        key, resp = conll.read_conll(args.key), conll.read_conll(args.response)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = sorted(set(key) - set(resp))
    scores = coref.score_corpus(
        {n: d.entities for n, d in key.items()}, {n: d.entities for n, d in resp.items()}
    )
    if args.json:
        print(json.dumps({m: s._asdict() for m, s in scores.items()}, indent=2))
    else:
        print(f"{len(key)} documents" + (f" ({len(missing)} missing from the response)"
                                          if missing else ""))  # fmt: skip
        print(f"{'metric':10s} {'recall':>8s} {'precision':>10s} {'F1':>8s}")
        for m, s in scores.items():
            print(
                f"{NAMES[m]:10s} {100 * s.recall:8.2f} {100 * s.precision:10.2f} {100 * s.f1:8.2f}"
            )
    return 0
