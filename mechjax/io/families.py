"""Architecture families by name: which `models/` file handles which checkpoint type."""

from __future__ import annotations

import importlib

from mechjax.errors import CheckpointError
from mechjax.model import Family

# checkpoint architecture / HF model_type -> module in mechjax.models
_MODULES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "qwen3",
    "mixtral": "mixtral",
    "phi3": "phi3",
    "olmo2": "olmo2",
    "gpt2": "gpt2",
    "gpt_neox": "neox",
    "gptj": "gptj",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "bert": "bert",
}


def family_for(architecture: str) -> Family:
    """The `Family` that runs checkpoints of `architecture` (HF model_type or GGUF arch)."""
    if architecture not in _MODULES:
        raise CheckpointError(
            f"architecture {architecture!r} is not supported; supported: {sorted(_MODULES)}"
        )
    return family_of_module(_MODULES[architecture])


def family_of_module(module_name: str) -> Family:
    mod = importlib.import_module(f"mechjax.models.{module_name}")
    return Family(
        name=module_name,
        forward=mod.forward,
        site_names=mod.site_names,
        config_from_hf=getattr(mod, "config_from_hf", None),
        params_from_hf=getattr(mod, "params_from_hf", None),
        init=getattr(mod, "init", None),
        decode=getattr(mod, "decode", None),
    )
