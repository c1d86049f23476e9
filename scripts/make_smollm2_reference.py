"""Reference outputs of HF transformers on SmolLM2-135M (the same GGUF Q4_1 weights).

HF transformers dequantizes the GGUF itself (`from_pretrained(dir, gguf_file=...)`), so
the reference is independent of mechjax's reader. Stored per prompt: the token ids, the
full last-position logits, the top-64 logits at every position, and HF's 20-token greedy
continuation. The file is small enough to keep in the repository, so the parity test
also runs where torch is not installed.

    python scripts/make_smollm2_reference.py   # writes tests/fixtures/smollm2/reference.npz
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "12 + 35 = 47. 23 + 41 =",
    # over 100 tokens
    (
        "In the beginning of the twentieth century, the small fishing village on the northern "
        "coast had fewer than three hundred inhabitants. Most families owned a boat, a patch of "
        "potatoes and a few sheep; the children walked four miles to the nearest school, and the "
        "post arrived twice a week if the weather allowed. When the railway reached the valley in "
        "1911, everything changed within a decade: hotels were built along the harbour, the old "
        "net lofts became tea rooms, and visitors from the cities arrived every summer to paint "
        "the cliffs. The fishermen, who had once sold their catch at the market in the county "
        "town, now sold it directly to the hotel kitchens, and"
    ),
]
TOP_K = 64
N_NEW = 20
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "smollm2" / "reference.npz"


def hf_model_and_ids():
    import torch
    import transformers

    from mechjax.io import registry

    path = registry.resolve("smollm2-135m")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    return model, ids


def hf_outputs(model, ids):
    import torch

    rows = []
    with torch.no_grad():
        for seq in ids:
            t = torch.tensor([seq])
            logits = model(t).logits[0].numpy()
            gen = model.generate(
                t,
                max_new_tokens=N_NEW,
                do_sample=False,
                min_new_tokens=N_NEW,
                attention_mask=torch.ones_like(t),
                pad_token_id=0,
            )
            rows.append((logits, gen[0, len(seq) :].numpy()))
    return rows


def main():
    import transformers

    model, ids = hf_model_and_ids()
    arrays = {}
    for i, (seq, (logits, greedy)) in enumerate(zip(ids, hf_outputs(model, ids))):
        top = np.argsort(-logits, axis=-1)[:, :TOP_K]
        arrays[f"tokens_{i}"] = np.asarray(seq, np.int32)
        arrays[f"last_logits_{i}"] = logits[-1].astype(np.float32)
        arrays[f"top_ids_{i}"] = top.astype(np.int32)
        arrays[f"top_logits_{i}"] = np.take_along_axis(logits, top, -1).astype(np.float32)
        arrays[f"greedy_{i}"] = greedy.astype(np.int32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    meta = {
        "prompts": PROMPTS,
        "transformers": transformers.__version__,
        "top_k": TOP_K,
        "new_tokens": N_NEW,
        "lengths": [len(s) for s in ids],
    }
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB); prompt lengths {meta['lengths']}")


if __name__ == "__main__":
    main()
