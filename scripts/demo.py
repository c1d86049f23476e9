"""The main job on the offline default model (SmolLM2-135M-Instruct, GGUF Q4_1).

1. An IOI prompt and its top next tokens.
2. Residual-stream activation patching (denoising): the clean activation of
   `blocks.{l}.hook_resid_pre` at one position is patched into the corrupted run, for
   every layer and position, as ONE compiled program (`mechjax.patching.patch_sweep`:
   each layer continues from the cached prefix, positions run in vmapped chunks).
3. The grid is written as a PNG heatmap and an .npz file.
4. A greedy continuation of the prompt, with a progress bar (on a terminal).

Every compiled step reports its compile time apart from its run time; `--quiet` turns the
progress bar off.

    python scripts/demo.py --out out/demo
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mechjax as mj
from mechjax.metrics import LogitDiff
from mechjax.patching import patch_sweep
from mechjax.plotting import layer_position
from mechjax.progress import CompileClock, timing_note

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="registry name or checkpoint")
    ap.add_argument("--out", default="out/demo", help="output folder")
    ap.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = mj.load(args.model)
    tok = model.tokenizer
    print(
        f"loaded {args.model} in {time.perf_counter() - t0:.1f}s "
        f"({model.config.n_layers} layers, d_model {model.config.d_model})"
    )

    clean = jnp.asarray([tok.encode(CLEAN)], jnp.int32)
    corrupt = jnp.asarray([tok.encode(CORRUPT)], jnp.int32)
    if clean.shape != corrupt.shape:
        raise SystemExit(
            f"clean and corrupted prompts tokenize to {clean.shape} vs {corrupt.shape}"
        )
    answer, wrong = tok.to_single_token(" Mary"), tok.to_single_token(" John")

    run = jax.jit(mj.run)
    t0 = time.perf_counter()
    with CompileClock() as clock:
        logits = run(model, clean).logits[0, -1].block_until_ready()
    print(f"forward: {timing_note(clock.seconds, time.perf_counter() - t0)}")
    probs = np.asarray(jax.nn.softmax(logits))
    print(f"\nprompt: {CLEAN!r}")
    for t in np.argsort(-probs)[:8]:
        print(f"  {probs[t]:.4f}  {tok.decode([int(t)])!r}")

    clean_ld = float(logits[answer] - logits[wrong])
    c_logits = run(model, corrupt).logits[0, -1]
    corrupt_ld = float(c_logits[answer] - c_logits[wrong])
    print(f"\nlogit diff ' Mary' - ' John': clean {clean_ld:.3f}, corrupted {corrupt_ld:.3f}")

    t0 = time.perf_counter()
    with CompileClock() as clock:
        result = patch_sweep(
            model, clean, corrupt, LogitDiff(jnp.array([answer]), jnp.array([wrong])), "resid_pre"
        )
        grid = np.asarray(result.grid)
        norm = np.asarray(result.normalized())
    secs = time.perf_counter() - t0
    labels = [tok.decode([int(t)]) for t in clean[0]]
    print(
        f"patched {grid.size} (layer, position) cells in {secs:.1f}s, one compiled program "
        f"({timing_note(clock.seconds, secs)})"
    )
    best = np.unravel_index(np.argmax(norm), norm.shape)
    print(f"largest recovery {norm[best]:.2f} at layer {best[0]}, token {labels[best[1]]!r}")

    np.savez(
        out / "ioi_resid_pre_patching.npz",
        grid=grid,
        normalized=norm,
        clean_metric=clean_ld,
        corrupted_metric=corrupt_ld,
        tokens=np.asarray(clean[0]),
    )
    png = out / "ioi_resid_pre_patching.png"
    layer_position(
        norm,
        png,
        labels,
        title="IOI denoising: clean resid_pre into corrupted run",
        cbar_label="normalised logit difference (1 = clean, 0 = corrupted)",
    )
    print(f"wrote {png} and {out / 'ioi_resid_pre_patching.npz'}")

    # the bar (stderr, terminal only) shows compile time apart from generation time
    gen = mj.generate(model, [CLEAN], 32, progress=False if args.quiet else None)
    print(f"\ngreedy continuation: {CLEAN!r} ->{gen.texts[0]!r}")


if __name__ == "__main__":
    main()
