"""`mechjax generate MODEL "prompt"`: stream a continuation to the terminal.

mechjax generate smollm2-135m "Write a haiku about the sea." --chat
mechjax generate smollm2-135m "Once upon a time" -n 40 --temperature 0.8 --top-p 0.9 --seed 1

"""

from __future__ import annotations

import sys


def cmd_generate(args, out=None) -> int:
    import jax

    import mechjax as mj
    from mechjax.generation import generate, iter_generate

    out = out or sys.stdout
    model = mj.load(args.model)
    kw = dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        chat=args.chat,
        key=jax.random.key(args.seed) if args.temperature > 0 else None,
    )
    if args.no_stream:
        g = generate(model, [args.prompt], args.max_new_tokens, **kw)
        print(g.texts[0], file=out)
        return 0
    tok = model.tokenizer
    stop = set() if tok.eos_token_id is None else {tok.eos_token_id}
    ids: list[int] = []
    shown = ""
    for step in iter_generate(model, [args.prompt], args.max_new_tokens, **kw):
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
    return 0
