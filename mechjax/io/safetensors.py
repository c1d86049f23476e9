"""Read a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json).

    ckpt = read_hf_dir("path/to/SmolLM2-135M")
    ckpt.architecture == ckpt.config["model_type"]

Floating tensors (F16, BF16, F32, F64, F8) come back as float32 numpy arrays under their HF
names; integer and bool tensors keep their dtype. No torch: `safetensors` reads the numpy
view and `ml_dtypes` supplies bfloat16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mechjax.errors import CheckpointError
from mechjax.io.gguf import Checkpoint
from mechjax.io.tokenizer import Tokenizer

__all__ = ["read_hf_dir", "read_safetensors"]

_LAYOUT = "an HF checkpoint directory holds config.json, *.safetensors and tokenizer.json"


def _to_float32(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f" or a.dtype.name.startswith(("bfloat16", "float8")):
        return np.ascontiguousarray(a, dtype=np.float32)
    return a


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`(tensors, header metadata)` of one .safetensors file; floats as float32.

    A truncated or corrupted file raises CheckpointError naming the file.
    """
    import ml_dtypes  # noqa: F401 - registers bfloat16/float8 with numpy for safetensors
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such safetensors file")
    size = path.stat().st_size
    try:
        out = {}
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                out[name] = _to_float32(f.get_tensor(name))
    except SafetensorError as e:
        raise CheckpointError(
            f"{path}: corrupted or truncated safetensors file ({size} bytes): {e}"
        ) from e
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{path}: cannot read safetensors file ({size} bytes): {type(e).__name__}: {e}"
        ) from e
    for name, a in out.items():
        if a.dtype == np.float32 and not np.isfinite(a).all():
            raise CheckpointError(
                f"{path}: tensor {name!r} holds non-finite values: the file is corrupted"
            )
    return out, meta


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        files = [path / f for f in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} names weight files that are missing: {missing}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files ({_LAYOUT})")
    return files


def read_hf_dir(path: str | Path) -> Checkpoint:
    """Read an HF checkpoint directory into a `Checkpoint` (tensors as float32 numpy)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory ({_LAYOUT})")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.json ({_LAYOUT})")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from e
    arch = config.get("model_type")
    if not isinstance(arch, str):
        raise CheckpointError(f"{cfg_file}: no model_type")
    tensors: dict[str, np.ndarray] = {}
    file_meta: dict[str, dict] = {}
    for f in _weight_files(path):
        t, meta = read_safetensors(f)
        dup = tensors.keys() & t.keys()
        if dup:
            raise CheckpointError(f"{f}: tensors also found in another file: {sorted(dup)[:5]}")
        tensors.update(t)
        file_meta[f.name] = meta
    tokenizer = None
    if (path / "tokenizer.json").is_file():
        try:
            tokenizer = Tokenizer.from_hf_dir(path)
        except Exception as e:  # tokenizers raises plain Exception on bad JSON
            raise CheckpointError(
                f"{path / 'tokenizer.json'}: cannot load the tokenizer: {e}"
            ) from e
    metadata = {"format": "safetensors", "files": file_meta}
    return Checkpoint(
        architecture=arch,
        config=config,
        tensors=tensors,
        metadata=metadata,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template if tokenizer else None,
        source=str(path),
    )
