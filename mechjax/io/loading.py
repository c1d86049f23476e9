"""`load`: a registry name, a GGUF file or an HF checkpoint directory -> `Model`.

No torch: GGUF through `gguf`, safetensors through `safetensors`, tokenizers through
`tokenizers`. No weight processing is applied here (folding and centering are opt-in
functions, never loader defaults).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from mechjax.errors import CheckpointError
from mechjax.io.families import family_for
from mechjax.model import Model


def read_checkpoint(name_or_path: str | Path):
    """The raw checkpoint (HF-style config, HF-named float32 tensors, tokenizer)."""
    from mechjax.io import registry

    path = Path(name_or_path).expanduser()
    if not path.exists():
        if registry.is_registered(str(name_or_path)):
            path = registry.resolve(str(name_or_path))
        else:
            registry.check_name(str(name_or_path))  # raises with the known names
    if path.is_file() and path.suffix == ".safetensors" and (path.parent / "config.json").is_file():
        path = path.parent  # a registered HF-directory model resolves to its weights file
    if path.is_dir():
        from mechjax.io.safetensors import read_hf_dir

        return read_hf_dir(path)
    if path.suffix == ".gguf":
        from mechjax.io.gguf import read_gguf

        return read_gguf(path)
    raise CheckpointError(
        f"{path} is neither a registered model name, a .gguf file nor an HF checkpoint "
        "directory (config.json + *.safetensors + tokenizer.json)"
    )


def load(name_or_path: str | Path, *, dtype=jnp.float32) -> Model:
    """Load a model by registry name (`smollm2-135m`), GGUF path or HF directory."""
    ckpt = read_checkpoint(name_or_path)
    # the HF model_type when the reader gives one: a GGUF `llama` with experts is Mixtral
    family = family_for(ckpt.config.get("model_type") or ckpt.architecture)
    if family.config_from_hf is None or family.params_from_hf is None:
        raise CheckpointError(f"family {family.name!r} has no checkpoint converters")
    config = family.config_from_hf(ckpt.config)
    params = family.params_from_hf(ckpt.tensors, config, dtype=dtype)
    return Model(params=params, config=config, family=family, tokenizer=ckpt.tokenizer)
