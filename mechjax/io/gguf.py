"""Read a GGUF file into an HF-style checkpoint: config dict, HF-named float32 tensors, tokenizer.

    ckpt = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    ckpt.config["num_hidden_layers"], ckpt.tensors["model.layers.0.self_attn.q_proj.weight"]

Every tensor is dequantized to float32 with `gguf.quants.dequantize` (F32, F16, BF16, Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0, the K-quants Q2_K..Q6_K and whatever else the installed `gguf`
supports). The dequantized network is the model: nothing is re-quantized or "repaired".

GGUF lists dimensions fastest-first (ggml order), the reverse of numpy: a llama.cpp
`token_embd.weight` of ggml shape [d_model, vocab] is a numpy [vocab, d_model] array, the
same layout as HF's `model.embed_tokens.weight`.

Each architecture has a `GGUFArchitecture` entry in `GGUF_ARCHITECTURES`
(`mechjax.io.gguf_archs`): how llama.cpp names map to HF names, which tensors llama.cpp
changed on conversion (the Q/K row permutation of Llama, Gemma's 1 + w norm gains,
Mixtral's stacked experts) and how the HF config is built from the `{arch}.*` metadata.
A new family adds its own entry there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mechjax.errors import CheckpointError
from mechjax.io.gguf_archs import GGUF_ARCHITECTURES, GGUFArchitecture, permute_qk, unpermute_qk
from mechjax.io.tokenizer import Tokenizer

__all__ = [
    "GGUF_ARCHITECTURES",
    "Checkpoint",
    "GGUFArchitecture",
    "GGUFCheckpoint",
    "permute_qk",
    "read_gguf",
    "read_gguf_metadata",
    "unpermute_qk",
]

_MAGIC = b"GGUF"


@dataclass(frozen=True, repr=False)
class Checkpoint:
    """A checkpoint in HF vocabulary, whatever file format it came from."""

    architecture: str  # GGUF `general.architecture` or HF `model_type`
    config: dict  # HF-style config (the keys of the family's HF config class)
    tensors: dict[str, np.ndarray]  # HF tensor names -> float32 arrays
    metadata: dict  # plain python values (GGUF key/values, or HF file metadata)
    tokenizer: Tokenizer | None
    chat_template: str | None
    source: str = field(default="")  # the file or directory read

    def __repr__(self) -> str:
        n = sum(int(np.prod(a.shape)) for a in self.tensors.values())
        return (
            f"Checkpoint(architecture={self.architecture!r}, source={self.source!r}, "
            f"{len(self.tensors)} tensors, {n / 1e6:.1f}M values, tokenizer={self.tokenizer!r})"
        )


GGUFCheckpoint = Checkpoint


# ---------------------------------------------------------------------- reading
#
# The header (metadata and tensor table) is parsed here rather than by `gguf.GGUFReader`,
# which builds a numpy view per array element: it needs ~4 s for SmolLM2's 49k-token
# vocabulary and ~50 s for Gemma 3's 262k. The tensor data is mapped, not read, and
# dequantized by `gguf.quants.dequantize`.

# GGUF value types (gguf.GGUFValueType): numpy dtype of the scalars, 8 = string, 9 = array
_VALUE_DTYPES = {
    0: "u1",
    1: "i1",
    2: "u2",
    3: "i2",
    4: "u4",
    5: "i4",
    6: "f4",
    7: "?",
    10: "u8",
    11: "i8",
    12: "f8",
}
_STRING, _ARRAY = 8, 9
_STRUCT = {
    code: struct.Struct("<" + c)
    for code, c in zip(
        ("u1", "i1", "u2", "i2", "u4", "i4", "f4", "?", "u8", "i8", "f8"),
        ("B", "b", "H", "h", "I", "i", "f", "?", "Q", "q", "d"),
    )
}


class _Truncated(Exception):
    pass


class _Header:
    """GGUF metadata and tensor table, parsed from a read-only memory map."""

    def __init__(self, path: Path):
        import mmap

        self.path = path
        with open(path, "rb") as f:
            self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = len(self.buf)
        self.pos = 0

    # -- primitive reads (little-endian)
    def _take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > self.size:
            raise _Truncated(f"needs {start + n} bytes at offset {start}")
        self.pos = start + n
        return start

    def scalar(self, code: str):
        fmt = _STRUCT[code]
        return fmt.unpack_from(self.buf, self._take(fmt.size))[0]

    def string(self) -> str:
        n = self.scalar("u8")
        start = self._take(n)
        raw = self.buf[start : start + n]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype in _VALUE_DTYPES:
            return self.scalar(_VALUE_DTYPES[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.scalar("u4"), self.scalar("u8")
            if etype in _VALUE_DTYPES:
                dt = np.dtype(_VALUE_DTYPES[etype]).newbyteorder("<")
                start = self._take(n * dt.itemsize)
                return np.frombuffer(self.buf, dt, n, start).tolist()
            if n > self.size:  # every element takes at least one byte
                raise _Truncated(f"declares an array of {n} elements")
            return [self.value(etype) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {vtype} at offset {self.pos - 4}")

    def parse(self):
        """(metadata, [(name, ggml dims, ggml type id, offset)], data start)."""
        self._take(4)  # the magic, checked by the caller
        version = self.scalar("u4")
        if version not in (2, 3):
            hint = " (big-endian files are not supported)" if version & 0xFFFF == 0 else ""
            raise ValueError(f"GGUF version {version} is not supported (2 and 3 are){hint}")
        n_tensors, n_kv = self.scalar("u8"), self.scalar("u8")
        md: dict[str, Any] = {
            "GGUF.version": version,
            "GGUF.tensor_count": n_tensors,
            "GGUF.kv_count": n_kv,
        }
        for _ in range(n_kv):
            key = self.string()
            md[key] = self.value(self.scalar("u4"))
        infos = []
        for _ in range(n_tensors):
            name = self.string()
            n_dims = self.scalar("u4")
            if n_dims > 8:
                raise ValueError(f"tensor {name!r} declares {n_dims} dimensions")
            dims = [self.scalar("u8") for _ in range(n_dims)]
            infos.append((name, dims, self.scalar("u4"), self.scalar("u8")))
        align = md.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise ValueError(f"general.alignment {align!r} is not a power of two")
        return md, infos, -(-self.pos // align) * align


class _Tensor(NamedTuple):
    name: str
    qtype: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # numpy order (ggml dims reversed)
    data: np.ndarray  # uint8 bytes, mapped from the file


def _parse(path: str | Path, *, tensors: bool = True):
    """(metadata, [_Tensor]) of a GGUF file, or a CheckpointError saying what is wrong."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _MAGIC:
        raise CheckpointError(
            f"{path}: not a GGUF file (bad magic {head!r}, expected {_MAGIC!r}; {size} bytes)"
        )
    hdr = _Header(path)
    try:
        md, infos, data_start = hdr.parse()
    except _Truncated as e:
        raise CheckpointError(
            f"{path}: truncated GGUF file: it is {size} bytes but its header {e}; download it again"
        ) from e
    except (ValueError, OverflowError, MemoryError) as e:
        raise CheckpointError(
            f"{path}: corrupted GGUF file ({size} bytes): the header cannot be "
            f"parsed ({type(e).__name__}: {e})"
        ) from e
    if not tensors:
        return md, []
    out, seen = [], set()
    for name, dims, type_id, offset in infos:
        try:
            qt = gguf.GGMLQuantizationType(type_id)
            block, type_size = gguf.GGML_QUANT_SIZES[qt]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has unknown ggml type {type_id}") from e
        if name in seen:
            raise CheckpointError(f"{path}: tensor {name!r} appears twice")
        seen.add(name)
        shape = tuple(int(d) for d in reversed(dims))  # ggml order -> numpy order
        if not shape or shape[-1] % block:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({qt.name}) has shape {shape}, whose "
                f"rows do not split into blocks of {block}"
            )
        nbytes = int(np.prod(shape, dtype=np.int64)) * type_size // block
        start = data_start + offset
        if start + nbytes > size:
            raise CheckpointError(
                f"{path}: truncated GGUF file: it is {size} bytes but tensor {name!r} "
                f"({qt.name}, shape {shape}) needs data up to byte {start + nbytes} "
                f"({start + nbytes - size} bytes missing); download it again"
            )
        data = np.frombuffer(hdr.buf, np.uint8, nbytes, start)
        out.append(_Tensor(name, qt, shape, data))
    return md, out


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Only the key/value metadata of a GGUF file, as plain python values."""
    return _parse(path, tensors=False)[0]


def _dequantize(path, t: _Tensor) -> np.ndarray:
    import gguf
    from gguf.quants import quant_shape_to_byte_shape

    qt = t.qtype
    Q = gguf.GGMLQuantizationType
    try:
        ints = {Q.I8: np.int8, Q.I16: np.int16, Q.I32: np.int32, Q.I64: np.int64, Q.F64: np.float64}
        if qt in ints:
            out = t.data.view(np.dtype(ints[qt]).newbyteorder("<")).astype(np.float32)
        else:
            out = gguf.quants.dequantize(t.data.reshape(quant_shape_to_byte_shape(t.shape, qt)), qt)
    except NotImplementedError as e:
        raise CheckpointError(
            f"{path}: tensor {t.name!r} has type {qt.name}, which the installed "
            f"gguf package cannot dequantize ({e})"
        ) from e
    if out.size != int(np.prod(t.shape, dtype=np.int64)):
        raise CheckpointError(
            f"{path}: tensor {t.name!r} ({qt.name}) dequantizes to {out.size} "
            f"values, its shape {t.shape} needs {int(np.prod(t.shape))}"
        )
    out = out.reshape(t.shape)
    if out.dtype != np.float32 or not out.flags.writeable or not out.flags.c_contiguous:
        out = np.array(out, dtype=np.float32, order="C")  # own the memory, not the file's
    if not np.isfinite(out).all():
        bad = int(out.size - np.isfinite(out).sum())
        raise CheckpointError(
            f"{path}: tensor {t.name!r} ({qt.name}) holds {bad} non-finite "
            "values: the file is corrupted"
        )
    return out


def read_gguf(path: str | Path, *, progress: bool = False) -> Checkpoint:
    """Read a GGUF file: dequantized float32 tensors under HF names, an HF-style config,
    the metadata as plain values, and the tokenizer rebuilt from the metadata."""
    path = Path(path)
    md, tensors = _parse(path)
    arch = md.get("general.architecture")
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: GGUF metadata has no general.architecture")
    spec = GGUF_ARCHITECTURES.get(arch)
    if spec is None:
        raise CheckpointError(
            f"{path}: GGUF architecture {arch!r} is not supported "
            f"(supported: {sorted(GGUF_ARCHITECTURES)})"
        )
    if progress:
        from tqdm.auto import tqdm

        tensors = tqdm(tensors, desc=f"dequantizing {path.name}", unit="tensor")
    out: dict[str, np.ndarray] = {}
    for t in tensors:
        hf = spec.tensor_name(t.name)
        # tensors with no HF counterpart (e.g. llama3's rope_freqs) keep their GGUF name
        key = hf if hf is not None else t.name
        if key in out:
            raise CheckpointError(f"{path}: two GGUF tensors map to {key!r}")
        out[key] = _dequantize(path, t)
    config = spec.config(md, out)
    out = spec.combine({k: spec.fix_tensor(k, v, config) for k, v in out.items()}, config)
    try:
        tokenizer = Tokenizer.from_gguf_metadata(md) if "tokenizer.ggml.model" in md else None
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot rebuild the tokenizer: {e}") from e
    return Checkpoint(
        architecture=arch,
        config=config,
        tensors=out,
        metadata=md,
        tokenizer=tokenizer,
        chat_template=md.get("tokenizer.chat_template"),
        source=str(path),
    )
