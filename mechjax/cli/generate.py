"""`mechjax generate MODEL "prompt"`: stream a continuation to the terminal.

mechjax generate smollm2-135m "Write a haiku about the sea." --chat
mechjax generate smollm2-135m "Once upon a time" -n 40 --temperature 0.8 --top-p 0.9 --seed 1

Streamed text is its own progress; at the end, on a terminal, one line on stderr gives the
compile time apart from the generation time. `--no-stream` shows a progress bar instead;
`--quiet` turns both off.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def cmd_generate(args, out=None) -> int:
    import jax

    import mechjax as mj
    from mechjax.generation import generate, iter_generate
    from mechjax.progress import CompileClock, show_progress

    out = out or sys.stdout
    model = mj.load(args.model)
    kw: dict[str, Any] = dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        chat=args.chat,
        key=jax.random.key(args.seed) if args.temperature > 0 else None,
    )
    progress = False if args.quiet else None
    if args.no_stream:
        g = generate(model, [args.prompt], args.max_new_tokens, progress=progress, **kw)
        print(g.texts[0] if g.texts else "", file=out)
        return 0
    tok = model.tokenizer
    stop = set() if tok.eos_token_id is None else {tok.eos_token_id}
    ids: list[int] = []
    shown = ""
    t0 = time.perf_counter()
    # no bar: it would share the terminal line with the streamed text
    with CompileClock() as clock:
        for step in iter_generate(model, [args.prompt], args.max_new_tokens, progress=False, **kw):
            t = int(step[0])
            if t in stop:
                break
            ids.append(t)
            text = tok.decode(ids)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                out.write(text[len(shown) :])
                out.flush()
                shown = text
    out.write(tok.decode(ids)[len(shown) :] + "\n")
    out.flush()
    if show_progress(progress):
        run_s = max(time.perf_counter() - t0 - clock.seconds, 1e-9)
        print(
            f"[{len(ids)} tokens: compile {clock.seconds:.1f}s, "
            f"run {run_s:.1f}s, {len(ids) / run_s:.1f} tok/s]",
            file=sys.stderr,
        )
    return 0
