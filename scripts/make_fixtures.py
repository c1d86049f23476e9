"""Write reference fixtures from HF transformers for tests that run without torch.

Each fixture is a tiny random model of one architecture family, saved as an HF
checkpoint directory plus the reference outputs:

    tests/fixtures/<name>/config.json         the HF config, as `save_pretrained` writes it
    tests/fixtures/<name>/model.safetensors   the HF state dict, float32
    tests/fixtures/<name>/reference.npz       tokens [batch, pos] and HF logits

Weights are drawn at std 0.2 (norm gains at 1 + 0.2 noise) from a seeded torch
generator, so a wrong operation shows up as a large difference. Where a fixture exists to
exercise a feature (sliding window, llama3 RoPE scaling), the script checks that turning
the feature off changes HF's logits; otherwise the fixture could not catch its absence.

To add a fixture, append a `Fixture` to `FIXTURES`. Needs torch and transformers:

    python scripts/make_fixtures.py [--out tests/fixtures] [name ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
BATCH, SEQ = 2, 12

_LLAMA = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=64,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=0,
)


@dataclasses.dataclass(frozen=True)
class Fixture:
    name: str
    model_type: str
    config: dict
    description: str
    # Config overrides that switch the fixture's feature off; HF's logits must change.
    feature_off: dict | None = None
    seed: int = 0


FIXTURES = [
    Fixture(
        "gpt2",
        "gpt2",
        dict(
            n_layer=2,
            n_embd=32,
            n_head=4,
            vocab_size=64,
            n_positions=32,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "GPT-2: learned positions, LayerNorm, fused c_attn, gelu_new, tied unembedding",
    ),
    Fixture("llama_mha", "llama", _LLAMA, "Llama, multi-head attention, untied unembedding"),
    Fixture(
        "llama_gqa_llama3_rope",
        "llama",
        {
            **_LLAMA,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
        "Llama 3: GQA (4 query heads, 2 kv heads), llama3 RoPE scaling, tied embeddings",
        feature_off={"rope_scaling": None},
    ),
    Fixture(
        "qwen2_bias_gqa",
        "qwen2",
        {**_LLAMA, "num_key_value_heads": 2, "use_sliding_window": False},
        "Qwen2: q/k/v biases, GQA",
    ),
    Fixture(
        "mistral_sliding_window",
        "mistral",
        {**_LLAMA, "num_key_value_heads": 2, "sliding_window": 4},
        f"Mistral: GQA, sliding window 4 over {SEQ} positions",
        feature_off={"sliding_window": None},
    ),
]


def build(fx: Fixture, **overrides) -> torch.nn.Module:
    """The HF model of a fixture, with its seeded std-0.2 weights, in eval mode."""
    cfg = transformers.AutoConfig.for_model(fx.model_type, **{**fx.config, **overrides})
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    randomize(model, fx.seed)
    return model.eval()


def randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = std * torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + noise if _is_norm_gain(name, p) else noise)


def _is_norm_gain(name: str, p: torch.Tensor) -> bool:
    last = name.rsplit(".", 2)[-2] if "." in name else name
    return p.ndim == 1 and name.endswith("weight") and ("norm" in last or last.startswith("ln_"))


def tokens_for(fx: Fixture, vocab: int) -> np.ndarray:
    return np.random.RandomState(fx.seed + 1).randint(0, vocab, (BATCH, SEQ)).astype(np.int32)


def logits_of(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.numpy().astype(np.float32)


def check_feature_matters(fx: Fixture, tokens: np.ndarray, logits: np.ndarray) -> float:
    """Max |logit change| when the fixture's feature is off; raises if it is negligible."""
    if fx.feature_off is None:
        return float("nan")
    other = logits_of(build(fx, **fx.feature_off), tokens)
    change = float(np.abs(other - logits).max())
    if change < 1e-2:
        raise SystemExit(
            f"{fx.name}: switching off {fx.feature_off} changes logits by only "
            f"{change:.2g}; the fixture would not test the feature"
        )
    return change


def write(fx: Fixture, out: Path) -> Path:
    model = build(fx)
    tokens = tokens_for(fx, model.config.vocab_size)
    logits = logits_of(model, tokens)
    change = check_feature_matters(fx, tokens, logits)
    path = out / fx.name
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path, safe_serialization=True)
    (path / "generation_config.json").unlink(missing_ok=True)
    np.savez_compressed(
        path / "reference.npz",
        tokens=tokens,
        logits=logits,
        meta=np.array(
            json.dumps(
                {
                    "description": fx.description,
                    "seed": fx.seed,
                    "weight_std": 0.2,
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                }
            )
        ),
    )
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"{fx.name:26s} {size / 1024:7.1f} KiB  feature-off change {change:.3g}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="fixtures to write (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    known = {fx.name: fx for fx in FIXTURES}
    unknown = set(args.names) - set(known)
    if unknown:
        parser.error(f"unknown fixtures {sorted(unknown)}; known: {sorted(known)}")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or known:
        write(known[name], args.out)


if __name__ == "__main__":
    main()
