"""Saving and loading featurizers: orbax for the arrays, a JSON beside them for the kind,
width, feature count, site and any metadata; loading checks the site and width."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from mechjax.causal import featurizers as F
from mechjax.errors import InputError

_KINDS = {
    c.__name__: c for c in (F.Identity, F.Subspace, F.Rotation, F.BoundlessRotation, F.NeuronMask)
}


def save(feat: F.Featurizer, path, *, site: str, meta: dict | None = None) -> None:
    """Write a featurizer (orbax) with a JSON of its kind, width and site."""
    import orbax.checkpoint as ocp

    kind = type(feat).__name__
    if kind not in _KINDS:
        raise InputError(f"save: {kind} featurizers are not saved here (valid: {sorted(_KINDS)})")
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    leaves = {f.name: np.asarray(getattr(feat, f.name)) for f in dataclasses.fields(feat)}
    with ocp.StandardCheckpointer() as ck:
        ck.save(path / "arrays", leaves, force=True)
    info = {"kind": kind, "width": feat.width, "n_features": feat.n_features, "site": site}
    (path / "featurizer.json").write_text(json.dumps({**info, "meta": meta or {}}, indent=1))


def load(path, *, site: str | None = None, width: int | None = None) -> tuple[F.Featurizer, dict]:
    """(featurizer, its JSON) from `save`; checks the site and width when given."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not (path / "featurizer.json").is_file():
        raise InputError(f"no saved featurizer at {path} (featurizer.json missing)")
    info = json.loads((path / "featurizer.json").read_text())
    if site is not None and info["site"] != site:
        raise InputError(f"the featurizer at {path} was trained at {info['site']!r}, not {site!r}")
    if width is not None and info["width"] != width:
        raise InputError(f"the featurizer at {path} reads width {info['width']}, not {width}")
    with ocp.StandardCheckpointer() as ck:
        leaves = ck.restore(path / "arrays")
    cls = _KINDS[info["kind"]]
    return cls(**{k: jnp.asarray(v) for k, v in leaves.items()}), info


def describe(feat: F.Featurizer) -> dict[str, Any]:
    """Kind, width, feature count and (for learned masks) how many features are on."""
    out: dict[str, Any] = {
        "kind": type(feat).__name__,
        "width": feat.width,
        "n_features": feat.n_features,
    }
    if feat.learned_mask:
        out["n_on"] = int(np.asarray(feat.mask(None)).sum())
    return out
