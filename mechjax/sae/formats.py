"""SAE files: SAELens directories both ways, Gemma Scope's `params.npz` in.

- `load(path)`: a SAELens directory (`cfg.json` + `sae_weights.safetensors`;
  architectures standard, topk, jumprelu, gated, and transcoders, with the config layout
  of SAELens 6 (`metadata` block) or of earlier versions (fields at the top level,
  `activation_fn_str`/`activation_fn_kwargs`)), or a Gemma Scope `params.npz` (JumpReLU,
  no decoder bias subtracted from the input) or its folder.
- `save(sae, path)`: a SAELens directory SAELens loads; `load(save(sae))` gives the same
  arrays bit for bit and the same static fields. Architectures SAELens has no name for
  (`abstopk`, `batchtopk` in training form) are written with their own `architecture`
  name, which only mechjax reads; BatchTopK is written as SAELens writes it, a JumpReLU
  whose thresholds all equal the learned one, with `mechjax_arch: batchtopk` to read back.

Every problem with a file raises `CheckpointError` naming the file and the field: a
missing or unreadable file, a truncated safetensors, an unknown architecture, a missing
tensor, a shape that disagrees with `d_in`/`d_sae`, an activation normalisation this
loader does not apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from mechjax.errors import CheckpointError
from mechjax.sae.architectures import SAE, SAEMeta

__all__ = ["CFG_FILE", "WEIGHTS_FILE", "load", "save"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
GEMMA_SCOPE_FILE = "params.npz"

# SAELens architecture name -> (mechjax arch, transcoder?)
_FROM_SAELENS = {
    "standard": "relu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "batchtopk": "batchtopk",
    "abstopk": "abstopk",
    "relu": "relu",
    "transcoder": "relu",
    "skip_transcoder": "relu",
    "jumprelu_transcoder": "jumprelu",
    "jumprelu_skip_transcoder": "jumprelu",
}
_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
               "batchtopk": "jumprelu", "abstopk": "abstopk"}  # fmt: skip


def _fail(path: Path, msg: str) -> CheckpointError:
    return CheckpointError(f"{path}: {msg}")


def _cfg_of(sae: SAE) -> dict[str, Any]:
    arch = _TO_SAELENS[sae.arch]
    if sae.is_transcoder:
        base = "jumprelu_" if sae.arch == "jumprelu" else ""
        arch = f"{base}{'skip_' if sae.W_skip is not None else ''}transcoder"
        if sae.arch not in ("relu", "jumprelu"):
            arch = f"{sae.arch}_transcoder"
    m = sae.meta
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": m.model_name,
            "hook_name": m.hook_name,
            "hook_head_index": None,
            "prepend_bos": m.prepend_bos,
            "dataset_path": m.dataset_path,
            "context_size": m.context_size,
            "hook_name_out": m.hook_name_out or None,
            "mechjax_arch": sae.arch,
            "mechjax_bandwidth": sae.bandwidth,
        },
    }
    if sae.is_transcoder:
        cfg["d_out"] = sae.d_out
        cfg["metadata"]["hook_name_out"] = m.hook_name_out
        cfg["metadata"]["hook_head_index_out"] = None
    if sae.arch in ("topk", "abstopk", "batchtopk"):
        cfg["k"] = sae.k
    if sae.arch == "topk":
        cfg["rescale_acts_by_decoder_norm"] = False
    return cfg


def _tensors_of(sae: SAE) -> dict[str, np.ndarray]:
    out: dict[str, Any] = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if sae.arch == "gated":
        out.update(b_gate=sae.b_enc, b_mag=sae.b_mag, r_mag=sae.r_mag)
    else:
        out["b_enc"] = sae.b_enc
    if sae.threshold is not None:
        out["threshold"] = sae.threshold
    if sae.W_skip is not None:
        out["W_skip"] = sae.W_skip
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def save(sae: SAE, path: str | Path) -> Path:
    """Write `sae` as a SAELens directory (`cfg.json`, `sae_weights.safetensors`)."""
    from safetensors.numpy import save_file

    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (WEIGHTS_FILE + ".tmp")
    save_file(_tensors_of(sae), str(tmp))
    tmp.replace(d / WEIGHTS_FILE)
    (d / CFG_FILE).write_text(json.dumps(_cfg_of(sae), indent=2) + "\n")
    return d


# ------------------------------------------------------------------------------ loading


def load(path: str | Path) -> SAE:
    """An SAE from a SAELens directory or a Gemma Scope `params.npz` (file or folder)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".npz":
        return _load_gemma_scope(p)
    if p.is_dir() and (p / GEMMA_SCOPE_FILE).exists() and not (p / CFG_FILE).exists():
        return _load_gemma_scope(p / GEMMA_SCOPE_FILE)
    if not p.exists():
        raise CheckpointError(f"{p}: no such SAE file or directory")
    if not p.is_dir():
        raise _fail(
            p,
            f"not an SAE: expected a SAELens directory ({CFG_FILE} + {WEIGHTS_FILE}) or a Gemma Scope {GEMMA_SCOPE_FILE}",
        )
    cfg = _read_cfg(p / CFG_FILE)
    tensors = _read_safetensors(p / WEIGHTS_FILE)
    return _from_saelens(p, cfg, tensors)


def _read_cfg(f: Path) -> dict:
    if not f.exists():
        raise _fail(f, "missing: a SAELens SAE directory needs its config")
    try:
        cfg = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(f, f"not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise _fail(f, f"expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _read_safetensors(f: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not f.exists():
        raise _fail(f, "missing: a SAELens SAE directory needs its weights")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own errors for truncated headers/data
        raise _fail(
            f, f"unreadable or truncated safetensors file ({type(e).__name__}: {e})"
        ) from None


def _field(cfg: dict, f: Path, name: str, kind: type | tuple = int) -> Any:
    if name not in cfg:
        raise _fail(f, f"field {name!r} is missing")
    v = cfg[name]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        raise _fail(f, f"field {name!r} must be {getattr(kind, '__name__', kind)}, got {v!r}")
    return v


def _meta_of(cfg: dict) -> SAEMeta:
    md = cfg.get("metadata") or {}
    get = lambda k, default: md.get(k, cfg.get(k, default))
    return SAEMeta(
        model_name=str(get("model_name", "") or ""),
        hook_name=str(get("hook_name", "") or ""),
        hook_name_out=str(get("hook_name_out", "") or ""),
        context_size=int(get("context_size", 0) or 0),
        prepend_bos=bool(get("prepend_bos", False)),
        dataset_path=str(get("dataset_path", "") or ""),
    )


def _arch_of(cfg: dict, f: Path) -> tuple[str, int]:
    """mechjax architecture and k, from SAELens 6 or older config layouts."""
    md = cfg.get("metadata") or {}
    name = cfg.get("architecture", "standard")
    if not isinstance(name, str) or name not in _FROM_SAELENS:
        raise _fail(
            f, f"field 'architecture' is {name!r}, not one this loader knows "
            f"(valid: {', '.join(sorted(_FROM_SAELENS))})"
        )  # fmt: skip
    arch = _FROM_SAELENS[name]
    if md.get("mechjax_arch") in ("batchtopk", "abstopk"):
        arch = md["mechjax_arch"]
    act = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    if name == "standard" and act == "topk":  # SAELens 5: a TopK SAE is "standard" + topk
        arch = "topk"
    k = cfg.get("k")
    if k is None:
        k = (cfg.get("activation_fn_kwargs") or {}).get("k", 0)
    if arch in ("topk", "abstopk", "batchtopk"):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise _fail(f, f"field 'k' must be a positive int for a {name} SAE, got {k!r}")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm != "none":
        raise _fail(
            f, f"field 'normalize_activations' is {norm!r}: only 'none' is supported (fold "
            "the scaling into the weights before saving)"
        )  # fmt: skip
    return arch, int(k or 0)


def _tensor(t: dict, f: Path, name: str, shape: tuple) -> np.ndarray:
    if name not in t:
        raise _fail(f, f"tensor {name!r} is missing (has: {', '.join(sorted(t))})")
    a = t[name]
    if tuple(a.shape) != tuple(shape):
        raise _fail(
            f,
            f"tensor {name!r} has shape {tuple(a.shape)}, expected {tuple(shape)} from the config's d_in/d_sae/d_out",
        )
    return a


def _from_saelens(d: Path, cfg: dict, t: dict) -> SAE:
    fc, fw = d / CFG_FILE, d / WEIGHTS_FILE
    arch, k = _arch_of(cfg, fc)
    d_in, d_sae = _field(cfg, fc, "d_in"), _field(cfg, fc, "d_sae")
    d_out = cfg.get("d_out") or d_in
    name = cfg.get("architecture", "standard")
    W = lambda n, s: jnp.asarray(_tensor(t, fw, n, s), jnp.float32)
    extra: dict[str, Any] = {}
    b_enc = W("b_gate" if arch == "gated" else "b_enc", (d_sae,))
    if arch == "gated":
        extra.update(r_mag=W("r_mag", (d_sae,)), b_mag=W("b_mag", (d_sae,)))
    if arch in ("jumprelu", "batchtopk"):
        if "threshold" not in t and "log_threshold" in t:
            extra["threshold"] = jnp.exp(W("log_threshold", (d_sae,)))
        else:
            extra["threshold"] = W("threshold", (d_sae,))
    if "skip" in name or "W_skip" in t:
        extra["W_skip"] = W("W_skip", (d_in, d_out))
    w_enc, w_dec = W("W_enc", (d_in, d_sae)), W("W_dec", (d_sae, d_out))
    if cfg.get("rescale_acts_by_decoder_norm"):  # fold: the same latents, unit decoder rows
        n = jnp.linalg.norm(w_dec, axis=-1)
        w_enc, b_enc, w_dec = w_enc * n, b_enc * n, w_dec / n[:, None]
    apply = cfg.get("apply_b_dec_to_input", d_out == d_in)
    if apply and d_out != d_in:
        raise _fail(fc, f"field 'apply_b_dec_to_input' is true but d_out {d_out} != d_in {d_in}")
    bandwidth = (cfg.get("metadata") or {}).get("mechjax_bandwidth", 0.001)
    return SAE(
        W_enc=w_enc,
        b_enc=b_enc,
        W_dec=w_dec,
        b_dec=W("b_dec", (d_out,)),
        arch=arch,
        k=k if arch in ("topk", "abstopk", "batchtopk") else 0,
        apply_b_dec_to_input=bool(apply),
        bandwidth=float(bandwidth),
        meta=_meta_of(cfg),
        **extra,
    )


def _load_gemma_scope(f: Path) -> SAE:
    try:
        with np.load(f) as z:
            t = {k: z[k] for k in z.files}
    except Exception as e:
        raise _fail(f, f"unreadable or truncated npz file ({type(e).__name__}: {e})") from None
    if "W_enc" not in t:
        raise _fail(f, f"tensor 'W_enc' is missing (has: {', '.join(sorted(t))})")
    if t["W_enc"].ndim != 2:
        raise _fail(f, f"tensor 'W_enc' must be [d_in, d_sae], got shape {t['W_enc'].shape}")
    d_in, d_sae = t["W_enc"].shape
    W = lambda n, s: jnp.asarray(_tensor(t, f, n, s), jnp.float32)
    return SAE(
        W_enc=W("W_enc", (d_in, d_sae)),
        b_enc=W("b_enc", (d_sae,)),
        W_dec=W("W_dec", (d_sae, d_in)),
        b_dec=W("b_dec", (d_in,)),
        threshold=W("threshold", (d_sae,)),
        arch="jumprelu",
        apply_b_dec_to_input=False,
        meta=SAEMeta(dataset_path=str(f)),
    )
