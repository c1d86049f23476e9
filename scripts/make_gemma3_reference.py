"""Reference outputs of HF transformers on Gemma 3 270M (the same GGUF Q4_K_M weights).

HF transformers dequantizes the GGUF itself (`from_pretrained(dir, gguf_file=...)`), so
the reference is independent of mechjax's reader. Stored per prompt: the token ids (with
Gemma's BOS), the top-64 logits at every position, the top-1024 logits at the last
position, and HF's 20-token greedy continuation. One prompt is longer than the 512-token
sliding window, so local and global layers differ on it. The file stays under 2 MB, so the
parity test also runs where torch is not installed.

    python scripts/make_gemma3_reference.py   # writes tests/fixtures/gemma3/reference.npz
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_STORY = (
    "In the beginning of the twentieth century, the small fishing village on the northern "
    "coast had fewer than three hundred inhabitants. Most families owned a boat, a patch of "
    "potatoes and a few sheep; the children walked four miles to the nearest school, and the "
    "post arrived twice a week if the weather allowed. When the railway reached the valley in "
    "1911, everything changed within a decade: hotels were built along the harbour, the old "
    "net lofts became tea rooms, and visitors from the cities arrived every summer to paint "
    "the cliffs. The fishermen, who had once sold their catch at the market in the county "
    "town, now sold it directly to the hotel kitchens, and"
)
PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "12 + 35 = 47. 23 + 41 =",
    _STORY,
    # over the 512-token sliding window
    " ".join(f"Chapter {i}. {_STORY} the years went by." for i in range(1, 6)),
]
TOP_K = 64
TOP_LAST = 1024
N_NEW = 20
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gemma3" / "reference.npz"


def hf_model_and_ids():
    import torch
    import transformers

    from mechjax.io import registry

    path = registry.resolve("gemma3-270m")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    model.config._attn_implementation = "eager"
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids = [tok(p)["input_ids"] for p in PROMPTS]  # with <bos>, as Gemma expects
    return model, ids


def main():
    import torch
    import transformers

    torch.set_num_threads(2)
    model, ids = hf_model_and_ids()
    arrays = {}
    with torch.no_grad():
        for i, seq in enumerate(ids):
            t = torch.tensor([seq])
            logits = model(t).logits[0].numpy()
            gen = model.generate(
                t,
                max_new_tokens=N_NEW,
                min_new_tokens=N_NEW,
                do_sample=False,
                attention_mask=torch.ones_like(t),
                pad_token_id=0,
            )
            top = np.argsort(-logits, axis=-1)[:, :TOP_K]
            last = np.argsort(-logits[-1])[:TOP_LAST]
            arrays[f"tokens_{i}"] = np.asarray(seq, np.int32)
            arrays[f"top_ids_{i}"] = top.astype(np.int32)
            arrays[f"top_logits_{i}"] = np.take_along_axis(logits, top, -1).astype(np.float32)
            arrays[f"last_ids_{i}"] = last.astype(np.int32)
            arrays[f"last_logits_{i}"] = logits[-1, last].astype(np.float32)
            arrays[f"greedy_{i}"] = gen[0, len(seq) :].numpy().astype(np.int32)
            del logits
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    meta = {
        "prompts": PROMPTS,
        "transformers": transformers.__version__,
        "top_k": TOP_K,
        "top_last": TOP_LAST,
        "new_tokens": N_NEW,
        "lengths": [len(s) for s in ids],
    }
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB); prompt lengths {meta['lengths']}")


if __name__ == "__main__":
    main()
