"""llama.cpp's architectures in HF vocabulary: tensor names, conversions undone, configs.

Each `GGUFArchitecture` says how a GGUF file of one `general.architecture` becomes an HF
checkpoint (`mechjax.io.gguf.read_gguf`): the HF name of each llama.cpp tensor, what
llama.cpp changed on conversion (`convert_hf_to_gguf.py`) and is undone here, and the HF
config built from the `{arch}.*` metadata keys.

==========  =====================  ==================================================
GGUF arch   HF model_type          undone on load
==========  =====================  ==================================================
llama       llama / mixtral        Q/K rows interleaved for llama.cpp's RoPE; experts
                                   (`ffn_*_exps`, or old per-expert `ffn_*.{e}`)
                                   restacked as transformers' `experts.gate_up_proj`
qwen2       qwen2                  nothing (rotate-half RoPE in llama.cpp too)
qwen3       qwen3                  nothing
gemma2      gemma2                 norm gains stored as 1 + w
gemma3      gemma3_text            norm gains stored as 1 + w
olmo2       olmo2                  nothing
phi3        phi3                   nothing (fused `attn_qkv`, `ffn_up` = [gate; up]
                                   are HF's fused tensors); LongRoPE factors are the
                                   `rope_factors_long/short` tensors
gptj        gptj                   nothing (llama.cpp's default RoPE is GPT-J's)
==========  =====================  ==================================================

llama.cpp's converter has no GPT-J class; the `gptj` entry follows the `gguf` package's
tensor-name table for that architecture. Gemma 2's `query_pre_attn_scalar` is not in the
metadata; as llama.cpp does, it is `d_model / n_heads` for the 46-layer (27B) model and
`d_head` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from mechjax.errors import CheckpointError

__all__ = ["GGUF_ARCHITECTURES", "GGUFArchitecture", "permute_qk", "unpermute_qk"]

Tensors = Mapping[str, np.ndarray]


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's conversion of HF q_proj/k_proj rows (interleaved RoPE pairs).

    Within each head, HF rows [x_0..x_{h/2-1}, y_0..y_{h/2-1}] become [x_0, y_0, x_1, y_1, ...].
    llama.cpp applies it to q_proj with n_head and to k_proj with n_kv_head.
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of even size")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_qk`: llama.cpp's q/k rows back to HF's order."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of even size")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _keep(tensors: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    return tensors


def _same(name: str, w: np.ndarray, config: dict) -> np.ndarray:
    return w


class GGUFArchitecture(NamedTuple):
    """How one llama.cpp architecture maps to HF names, tensors and config."""

    tensor_name: Callable[[str], str | None]  # GGUF name -> HF name (None: not mapped)
    config: Callable[[Mapping[str, Any], Tensors], dict]  # (metadata, tensors) -> HF config
    fix_tensor: Callable[[str, np.ndarray, dict], np.ndarray] = _same  # (HF name, array, config)
    # the whole HF-named dict after `fix_tensor`, for conversions of several tensors
    combine: Callable[[dict[str, np.ndarray], dict], dict[str, np.ndarray]] = _keep


# ---------------------------------------------------------------------------- names

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([A-Za-z0-9_.]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([A-Za-z0-9_]+)\.(weight|bias)$")

_LLAMA_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LLAMA_BLOCK = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_QK_NORM = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_MOE = {  # stacked experts; restacked into transformers' layout by `_moe_combine`
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_exps": "mlp.experts.gate_proj",
    "ffn_up_exps": "mlp.experts.up_proj",
    "ffn_down_exps": "mlp.experts.down_proj",
}
_OLD_EXPERT_RE = re.compile(r"^(ffn_gate|ffn_up|ffn_down)\.(\d+)$")  # pre-2024 per-expert files
_GEMMA_BLOCK = {
    **{k: v for k, v in _LLAMA_BLOCK.items() if k != "ffn_norm"},
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_OLMO2_BLOCK = {
    **{k: v for k, v in _LLAMA_BLOCK.items() if not k.endswith("_norm")},
    **_QK_NORM,
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_PHI3_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_up": "mlp.gate_up_proj",  # llama.cpp keeps Phi-3's fused [gate; up]
    "ffn_down": "mlp.down_proj",
}
_GPTJ_GLOBAL = {
    "token_embd": "transformer.wte",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
}
_GPTJ_BLOCK = {
    "attn_norm": "ln_1",
    "attn_q": "attn.q_proj",
    "attn_k": "attn.k_proj",
    "attn_v": "attn.v_proj",
    "attn_output": "attn.out_proj",
    "ffn_up": "mlp.fc_in",
    "ffn_down": "mlp.fc_out",
}


def _namer(
    block: Mapping[str, str], glob: Mapping[str, str] = _LLAMA_GLOBAL, layers: str = "model.layers"
) -> Callable[[str], str | None]:
    """GGUF name -> HF name for `blk.{i}.{part}.{weight|bias}` and global tensors."""

    def name(gguf_name: str) -> str | None:
        m = _BLOCK_RE.match(gguf_name)
        if m:
            layer, part, kind = m.groups()
            old = _OLD_EXPERT_RE.match(part)
            if old and part not in block:  # blk.N.ffn_gate.E.weight: keep, restacked later
                return f"{layers}.{layer}.mlp.experts.{old.group(2)}.{old.group(1)}.{kind}"
            hf = block.get(part)
            return None if hf is None else f"{layers}.{layer}.{hf}.{kind}"
        m = _GLOBAL_RE.match(gguf_name)
        if m and m.group(1) in glob:
            return f"{glob[m.group(1)]}.{m.group(2)}"
        return None

    return name


# --------------------------------------------------------------------------- configs


def _need(md: Mapping[str, Any], key: str):
    if key not in md:
        raise CheckpointError(f"GGUF metadata has no {key!r}")
    return md[key]


def _vocab(md: Mapping[str, Any], tensors: Tensors, embed: str, arch: str) -> int:
    if embed in tensors:
        return int(tensors[embed].shape[0])
    if "tokenizer.ggml.tokens" in md:
        return len(md["tokenizer.ggml.tokens"])
    return int(_need(md, f"{arch}.vocab_size"))


def _common(
    md: Mapping[str, Any], tensors: Tensors, arch: str, embed: str = "model.embed_tokens.weight"
) -> dict:
    """The HF keys every architecture reads from the same `{arch}.*` metadata."""
    d_model = int(_need(md, f"{arch}.embedding_length"))
    n_heads = int(_need(md, f"{arch}.attention.head_count"))
    return {
        "vocab_size": _vocab(md, tensors, embed, arch),
        "hidden_size": d_model,
        "num_hidden_layers": int(_need(md, f"{arch}.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(md.get(f"{arch}.attention.head_count_kv", n_heads)),
        "head_dim": int(md.get(f"{arch}.attention.key_length", d_model // n_heads)),
        "rms_norm_eps": float(md.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(md.get(f"{arch}.rope.freq_base", 10000.0)),
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": md.get("tokenizer.ggml.padding_token_id"),
    }


def _ffn(md: Mapping[str, Any], tensors: Tensors, arch: str, name: str) -> int:
    if f"{arch}.feed_forward_length" in md:
        return int(md[f"{arch}.feed_forward_length"])
    if name in tensors:
        return int(tensors[name].shape[0])
    raise CheckpointError(f"GGUF metadata has no {arch}.feed_forward_length")


def _llama_config(md: Mapping[str, Any], tensors: Tensors) -> dict:
    a = "llama"
    scaling = None
    kind = md.get(f"{a}.rope.scaling.type")
    if kind not in (None, "none"):
        scaling = {"rope_type": str(kind), "factor": float(md.get(f"{a}.rope.scaling.factor", 1.0))}
        if f"{a}.rope.scaling.original_context_length" in md:
            scaling["original_max_position_embeddings"] = int(
                md[f"{a}.rope.scaling.original_context_length"]
            )
    elif f"{a}.rope.scale_linear" in md:
        scaling = {"rope_type": "linear", "factor": float(md[f"{a}.rope.scale_linear"])}
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        **_common(md, tensors, a),
        "intermediate_size": _ffn(md, tensors, a, "model.layers.0.mlp.up_proj.weight"),
        "max_position_embeddings": int(md.get(f"{a}.context_length", 2048)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "rope_scaling": scaling,
        "hidden_act": "silu",
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in tensors,
        "mlp_bias": "model.layers.0.mlp.up_proj.bias" in tensors,
    }
    n_experts = int(md.get(f"{a}.expert_count", 0) or 0)
    if n_experts:  # Mixtral: a llama with experts
        config.update(
            model_type="mixtral",
            architectures=["MixtralForCausalLM"],
            num_local_experts=n_experts,
            num_experts_per_tok=int(_need(md, f"{a}.expert_used_count")),
            sliding_window=None,
        )
        del config["attention_bias"], config["mlp_bias"]
    return config


def _llama_fix(name: str, w: np.ndarray, config: dict) -> np.ndarray:
    if name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
        return unpermute_qk(w, config["num_attention_heads"])
    if name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
        return unpermute_qk(w, config["num_key_value_heads"])
    return w


def _moe_combine(tensors: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    """Experts as transformers stores them: `mlp.experts.gate_up_proj` [E, 2 d_mlp, d]
    (gate rows first) and `mlp.experts.down_proj` [E, d, d_mlp]."""
    if "num_local_experts" not in config:
        return tensors
    out = dict(tensors)
    n = config["num_local_experts"]
    for l in range(config["num_hidden_layers"]):
        pre = f"model.layers.{l}.mlp.experts"
        parts = {}
        for kind in ("gate", "up", "down"):
            stacked = out.pop(f"{pre}.{kind}_proj.weight", None)
            old = [f"{pre}.{e}.ffn_{kind}.weight" for e in range(n)]
            if stacked is None and all(k in out for k in old):
                stacked = np.stack([out.pop(k) for k in old])
            if stacked is None:
                raise CheckpointError(f"GGUF file has no experts' ffn_{kind} for layer {l}")
            parts[kind] = stacked
        out[f"{pre}.gate_up_proj"] = np.concatenate([parts["gate"], parts["up"]], axis=1)
        out[f"{pre}.down_proj"] = parts["down"]
    return out


def _qwen_config(arch: str) -> Callable[[Mapping[str, Any], Tensors], dict]:
    def config(md: Mapping[str, Any], tensors: Tensors) -> dict:
        bias = "model.layers.0.self_attn.q_proj.bias" in tensors
        return {
            "model_type": arch,
            "architectures": [f"{arch.capitalize()}ForCausalLM"],
            **_common(md, tensors, arch),
            "intermediate_size": _ffn(md, tensors, arch, "model.layers.0.mlp.up_proj.weight"),
            "max_position_embeddings": int(md.get(f"{arch}.context_length", 32768)),
            "tie_word_embeddings": "lm_head.weight" not in tensors,
            "hidden_act": "silu",
            # Qwen2's q/k/v always carry biases; Qwen3's attention_bias covers q/k/v/o
            **({} if arch == "qwen2" else {"attention_bias": bias}),
        }

    return config


def _gemma2_config(md: Mapping[str, Any], tensors: Tensors) -> dict:
    a = "gemma2"
    config = {
        "model_type": "gemma2",
        "architectures": ["Gemma2ForCausalLM"],
        **_common(md, tensors, a),
        "intermediate_size": int(_need(md, f"{a}.feed_forward_length")),
        "max_position_embeddings": int(md.get(f"{a}.context_length", 8192)),
        "sliding_window": int(md.get(f"{a}.attention.sliding_window", 4096)),
        "attn_logit_softcapping": md.get(f"{a}.attn_logit_softcapping"),
        "final_logit_softcapping": md.get(f"{a}.final_logit_softcapping"),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "hidden_activation": "gelu_pytorch_tanh",
    }
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if config[key] is not None:
            config[key] = float(config[key])
    d, h = config["hidden_size"], config["num_attention_heads"]
    big = config["num_hidden_layers"] == 46  # Gemma 2 27B scales queries by d_model / n_heads
    config["query_pre_attn_scalar"] = d // h if big else config["head_dim"]
    return config


def _gemma3_config(md: Mapping[str, Any], tensors: Tensors) -> dict:
    """HF `gemma3_text` config, as HF's GGUF loader builds it: the `gemma3.*` keys it maps,
    Gemma3TextConfig's defaults for the rest (local RoPE base 10k, sliding-window pattern 6,
    query_pre_attn_scalar 256, no softcapping)."""
    a = "gemma3"
    common = _common(md, tensors, a)
    common["head_dim"] = int(md.get(f"{a}.attention.key_length", 256))
    common["rope_theta"] = float(md.get(f"{a}.rope.freq_base", 1_000_000.0))
    return {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        **common,
        "intermediate_size": int(_need(md, f"{a}.feed_forward_length")),
        "rope_local_base_freq": 10_000.0,
        "sliding_window": int(md.get(f"{a}.attention.sliding_window", 4096)),
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256,
        "max_position_embeddings": int(md.get(f"{a}.context_length", 32768)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
    }


def _gemma_fix(name: str, w: np.ndarray, config: dict) -> np.ndarray:
    # llama.cpp stores Gemma's RMSNorm gains as 1 + w; HF (and mechjax) hold w.
    # Gemma's RoPE is rotate-half in llama.cpp too (NEOX), so q/k rows are not permuted.
    if name.endswith("norm.weight"):
        return w - np.float32(1.0)
    return w


def _olmo2_config(md: Mapping[str, Any], tensors: Tensors) -> dict:
    a = "olmo2"
    return {
        "model_type": "olmo2",
        "architectures": ["Olmo2ForCausalLM"],
        **_common(md, tensors, a),
        "intermediate_size": _ffn(md, tensors, a, "model.layers.0.mlp.up_proj.weight"),
        "max_position_embeddings": int(md.get(f"{a}.context_length", 4096)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "hidden_act": "silu",
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in tensors,
    }


def _phi3_config(md: Mapping[str, Any], tensors: Tensors) -> dict:
    a = "phi3"
    config = {
        "model_type": "phi3",
        "architectures": ["Phi3ForCausalLM"],
        **_common(md, tensors, a),
        "intermediate_size": int(_need(md, f"{a}.feed_forward_length")),
        "max_position_embeddings": int(md.get(f"{a}.context_length", 4096)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "hidden_act": "silu",
        "sliding_window": int(md.get(f"{a}.attention.sliding_window", 0)) or None,
    }
    rope_dims = int(md.get(f"{a}.rope.dimension_count", config["head_dim"]))
    config["partial_rotary_factor"] = rope_dims / config["head_dim"]
    orig = int(md.get(f"{a}.rope.scaling.original_context_length", 0))
    config["original_max_position_embeddings"] = orig or config["max_position_embeddings"]
    long, short = tensors.get("rope_factors_long.weight"), tensors.get("rope_factors_short.weight")
    if (long is None) != (short is None):
        raise CheckpointError("GGUF file has only one of rope_factors_long / rope_factors_short")
    if long is not None and short is not None:
        config["rope_scaling"] = {
            "rope_type": "longrope",
            "long_factor": [float(x) for x in np.ravel(long)],
            "short_factor": [float(x) for x in np.ravel(short)],
            "original_max_position_embeddings": config["original_max_position_embeddings"],
            "partial_rotary_factor": config["partial_rotary_factor"],
        }
        if f"{a}.rope.scaling.attn_factor" in md:
            config["rope_scaling"]["attention_factor"] = float(md[f"{a}.rope.scaling.attn_factor"])
    return config


def _gptj_config(md: Mapping[str, Any], tensors: Tensors) -> dict:
    a = "gptj"
    common = _common(md, tensors, a, embed="transformer.wte.weight")
    return {
        "model_type": "gptj",
        "architectures": ["GPTJForCausalLM"],
        "vocab_size": common["vocab_size"],
        "n_embd": common["hidden_size"],
        "n_layer": common["num_hidden_layers"],
        "n_head": common["num_attention_heads"],
        "n_inner": _ffn(md, tensors, a, "transformer.h.0.mlp.fc_in.weight"),
        "rotary_dim": int(_need(md, f"{a}.rope.dimension_count")),
        "n_positions": int(md.get(f"{a}.context_length", 2048)),
        "layer_norm_epsilon": float(md.get(f"{a}.attention.layer_norm_epsilon", 1e-5)),
        "activation_function": "gelu_new",
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": common["bos_token_id"],
        "eos_token_id": common["eos_token_id"],
    }


GGUF_ARCHITECTURES: dict[str, GGUFArchitecture] = {
    "llama": GGUFArchitecture(
        _namer({**_LLAMA_BLOCK, **_MOE}), _llama_config, _llama_fix, _moe_combine
    ),
    "qwen2": GGUFArchitecture(_namer(_LLAMA_BLOCK), _qwen_config("qwen2")),
    "qwen3": GGUFArchitecture(_namer({**_LLAMA_BLOCK, **_QK_NORM}), _qwen_config("qwen3")),
    "gemma2": GGUFArchitecture(_namer(_GEMMA_BLOCK), _gemma2_config, _gemma_fix),
    "gemma3": GGUFArchitecture(_namer({**_GEMMA_BLOCK, **_QK_NORM}), _gemma3_config, _gemma_fix),
    "olmo2": GGUFArchitecture(_namer(_OLMO2_BLOCK), _olmo2_config),
    "phi3": GGUFArchitecture(_namer(_PHI3_BLOCK), _phi3_config),
    "gptj": GGUFArchitecture(_namer(_GPTJ_BLOCK, _GPTJ_GLOBAL, "transformer.h"), _gptj_config),
}
