"""Benchmark: greedy generation on SmolLM2-135M, mechjax vs HF transformers `generate`.

Both run the same GGUF weights (HF dequantizes the file itself) on the same left-padded
prompt tokens, greedy, every row running to `--new` tokens (no stop token), in one process.
Each side is warmed up once (mechjax compiles, torch allocates), then timed over
`--repeats` runs; the best run counts. Prints tokens/s of each and the ratio, and how many
rows generated the same tokens (the two implementations differ in float rounding, so a
near-tie can flip a greedy choice late in a row).

    python scripts/bench_generate.py [--batch 8] [--new 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "The three laws of thermodynamics are",
    "def fibonacci(n):",
    "My favourite recipe for pancakes needs",
    "In 1969, the first humans to walk on the Moon",
    "A good way to learn a new language is",
    "The most important idea in machine learning is",
]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    import jax

    import mechjax as mj
    from mechjax.generation import generate
    from mechjax.io import registry

    path = registry.resolve(args.model)
    model = mj.load(path)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    batch = model.tokenizer.encode_batch(prompts, padding_side="left")
    tokens, mask = batch.tokens, batch.attention_mask
    n_tokens = args.batch * args.new

    def run_mechjax():
        return generate(model, tokens, args.new, attention_mask=mask, stop_tokens=())

    t = time.perf_counter()
    ours = run_mechjax()
    print(
        f"mechjax: first call (compile + run) {time.perf_counter() - t:.1f} s "
        f"on {jax.default_backend()}"
    )
    t_ours = _best(run_mechjax, args.repeats)

    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids, am = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    pad = model.tokenizer.pad_token_id or 0
    # No EOS, like stop_tokens=() above: every row runs to the end and EOS stays a
    # possible greedy pick (min_new_tokens would instead forbid it and change the text).
    hf.generation_config.eos_token_id = None

    def run_hf():
        with torch.no_grad():
            return hf.generate(
                input_ids=ids,
                attention_mask=am,
                max_new_tokens=args.new,
                do_sample=False,
                pad_token_id=pad,
            )

    theirs = run_hf()  # warm-up
    t_hf = _best(run_hf, args.repeats)

    ref = theirs[:, tokens.shape[1] :].numpy()
    same_rows = int((ref == ours.tokens).all(1).sum())
    agree = float((ref == ours.tokens).mean())
    print(
        f"greedy, batch {args.batch}, {args.new} new tokens, prompt width {tokens.shape[1]}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  mechjax       {n_tokens / t_ours:8.1f} tokens/s  ({t_ours:.2f} s)")
    print(f"  HF generate   {n_tokens / t_hf:8.1f} tokens/s  ({t_hf:.2f} s)")
    print(f"  ratio mechjax / HF: {t_hf / t_ours:.2f}x")
    print(f"  identical rows: {same_rows}/{args.batch}; identical tokens: {agree:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
