"""Site names: build them, parse them back, check them, and know their axes.

Names are TransformerLens's, exactly: `hook_embed`, `blocks.3.hook_resid_pre`,
`blocks.3.attn.hook_z`, `blocks.3.ln1.hook_scale`, `ln_final.hook_normalized`.
SAELens and most released SAEs are keyed on them, so there is no second vocabulary.

Axis layout of each site kind (all with a leading `batch` axis):

=====================================  =========================================
site kind                              shape
=====================================  =========================================
resid_*, attn_out, mlp_out, embed, ..  [batch, pos, d_model]
mlp.hook_pre / pre_linear / post       [batch, pos, d_mlp]
ln*.hook_scale                         [batch, pos, 1]
attn.hook_q / k / v / z / rot_q / ..   [batch, pos, n_heads (or n_kv_heads), d_head]
attn.hook_result, hook_q/k/v_input     [batch, pos, n_heads, d_model]
attn.hook_attn_scores / hook_pattern   [batch, n_heads, query_pos, key_pos]
=====================================  =========================================
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, NamedTuple

from mechjax.errors import SiteError

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")

# Short names accepted by `act_name`, TransformerLens's `get_act_name` vocabulary.
_SHORT = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "q_input": "hook_q_input",
    "k_input": "hook_k_input",
    "v_input": "hook_v_input",
    "mlp_in": "hook_mlp_in",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "z": "attn.hook_z",
    "rot_q": "attn.hook_rot_q",
    "rot_k": "attn.hook_rot_k",
    "result": "attn.hook_result",
    "attn_scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern",
    "pre": "mlp.hook_pre",
    "pre_linear": "mlp.hook_pre_linear",
    "post": "mlp.hook_post",
}


class SiteInfo(NamedTuple):
    """A parsed site name: `blocks.3.attn.hook_z` -> (3, "attn", "hook_z")."""

    layer: int | None
    component: str | None
    hook: str


def act_name(kind: str, layer: int | None = None, norm: str | None = None) -> str:
    """Full site name from a short kind, like TransformerLens's `get_act_name`.

    `act_name("resid_pre", 3) == "blocks.3.hook_resid_pre"`;
    `act_name("scale", 3, "ln1") == "blocks.3.ln1.hook_scale"`;
    `act_name("normalized", norm="ln_final") == "ln_final.hook_normalized"`.
    """
    if kind in ("scale", "normalized"):
        if norm is None:
            raise SiteError(f"act_name({kind!r}) needs norm='ln1', 'ln2' or 'ln_final'")
        if norm == "ln_final":
            return f"ln_final.hook_{kind}"
        return f"blocks.{_layer(kind, layer)}.{norm}.hook_{kind}"
    if kind in ("embed", "pos_embed"):
        return f"hook_{kind}"
    if kind not in _SHORT:
        choices = sorted([*_SHORT, "scale", "normalized", "embed", "pos_embed"])
        raise SiteError(f"unknown site kind {kind!r}; valid kinds: {', '.join(choices)}")
    return f"blocks.{_layer(kind, layer)}.{_SHORT[kind]}"


def _layer(kind: str, layer: int | None) -> int:
    if layer is None:
        raise SiteError(f"site kind {kind!r} needs a layer index")
    return int(layer)


def parse(name: str) -> SiteInfo:
    """Parse a site name into (layer, component, hook)."""
    m = _BLOCK_RE.match(name)
    layer, rest = (int(m.group(1)), m.group(2)) if m else (None, name)
    parts = rest.split(".")
    if len(parts) == 1:
        return SiteInfo(layer, None, parts[0])
    return SiteInfo(layer, ".".join(parts[:-1]), parts[-1])


def axes(name: str) -> tuple[int, int | None]:
    """(position axis, head axis or None) of a site's activation, batch axis included."""
    info = parse(name)
    hook = info.hook
    if info.component in ("attn.q_norm", "attn.k_norm"):  # Gemma's QK-norm: per head
        return 1, 2
    if hook in ("hook_attn_scores", "hook_pattern"):
        return 2, 1
    if hook in (
        "hook_q",
        "hook_k",
        "hook_v",
        "hook_z",
        "hook_rot_q",
        "hook_rot_k",
        "hook_result",
        "hook_q_input",
        "hook_k_input",
        "hook_v_input",
        "hook_q_normed",
        "hook_k_normed",
        "hook_expert_out",  # [batch, pos, n_experts, d_model]: `heads=` picks experts
    ):
        return 1, 2
    return 1, None


def resolve(name) -> Any:
    """A site name from a full name or TransformerLens's tuple form.

    `resolve(("pattern", 3)) == "blocks.3.attn.hook_pattern"` (the key TransformerLens
    users write as `cache["pattern", 3]`); `("scale", 3, "ln1")` as `act_name`'s arguments.
    Strings are returned unchanged, for `check` to validate.
    """
    if isinstance(name, tuple) and is_short_tuple(name):
        return act_name(*name)
    return name


def is_short_tuple(name) -> bool:
    """True for `(kind, layer)` or `(kind, layer, norm)`: a short name with its layer."""
    return (
        isinstance(name, tuple)
        and len(name) in (2, 3)
        and isinstance(name[0], str)
        and (name[1] is None or isinstance(name[1], int))
        and (len(name) == 2 or isinstance(name[2], str))
    )


def short_name_hint(name: str) -> str | None:
    """What to write instead of a TransformerLens short name used as a site name.

    `"resid_pre"`, `"hook_resid_pre"` (no block) and `"blocks.3.resid_pre"` are names
    TransformerLens users type; the full name is `blocks.{layer}.hook_resid_pre`.
    None when `name` is not such a short form.
    """
    m = _BLOCK_RE.match(name)
    layer, rest = (int(m.group(1)), m.group(2)) if m else (None, name)
    kind = rest.split(".", 1)[1] if rest.startswith(("attn.", "mlp.")) else rest
    kind = kind[len("hook_") :] if kind.startswith("hook_") else kind
    if kind not in _SHORT:
        return None
    if layer is not None:
        full = act_name(kind, layer)
        if full == name:  # already the full form: a wrong layer, not a short name
            return None
        return f"write {full!r} (= mj.act_name({kind!r}, {layer}) or the tuple ({kind!r}, {layer}))"
    return (
        f"{name!r} is a TransformerLens short name without a layer; write the full name, "
        f"e.g. mj.act_name({kind!r}, 3) == {act_name(kind, 3)!r}, or the tuple ({kind!r}, 3)"
    )


def check(names: Iterable[str], valid: Iterable[str], what: str = "site") -> None:
    """Raise `SiteError` for any name not in `valid`, suggesting what to write instead."""
    valid = list(valid)
    valid_set = set(valid)
    for name in names:
        if name in valid_set:
            continue
        if is_short_tuple(name):
            raise SiteError(
                f"{what} {name!r}: site names are strings here; write "
                f"mj.act_name{name!r} == {resolve(name)!r}"
            )
        if not isinstance(name, str):
            raise SiteError(f"{what} names must be strings, got {type(name).__name__}: {name!r}")
        short = short_name_hint(name)
        if short is not None:
            raise SiteError(f"unknown {what} {name!r}: {short}")
        close = difflib.get_close_matches(name, valid, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SiteError(
            f"unknown {what} {name!r} for this model{hint} "
            f"({len(valid)} valid sites; see model.sites)"
        )
