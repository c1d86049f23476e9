"""`Tokenizer`: one interface over an HF `tokenizer.json` or a tokenizer rebuilt from GGUF metadata.

Backed by the `tokenizers` library (no transformers, no torch). Three ways in:

    Tokenizer.from_hf_dir(path)           # tokenizer.json (+ tokenizer_config.json, chat template)
    Tokenizer.from_file(tokenizer_json)   # a bare tokenizer.json
    Tokenizer.from_gguf_metadata(meta)    # the `tokenizer.ggml.*` keys of a GGUF file

Whether a BOS token is prepended by default follows the model's own convention: the HF
post-processor (or `add_bos_token` in tokenizer_config.json), or the GGUF flag
`tokenizer.ggml.add_bos_token`. Pass `add_bos=True/False` to override it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import tokenizers
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

__all__ = ["Batch", "Tokenizer"]


class Batch(NamedTuple):
    """A padded batch: `tokens[b, p]` is valid where `attention_mask[b, p]` is True."""

    tokens: np.ndarray  # int32 [batch, pos]
    attention_mask: np.ndarray  # bool [batch, pos]
    lengths: np.ndarray  # int32 [batch], number of real tokens per row


# GGUF token types (llama.cpp `llama_token_type`).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Text-splitting regexes of the byte-level BPE vocabularies llama.cpp names in
# `tokenizer.ggml.pre`. They are the split patterns of the models' own tokenizer.json files.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_BY_PRE = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "falcon3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Pre-tokenizer types whose tokenizer.json sets `ignore_merges` (a word already in the
# vocabulary is kept whole), as llama.cpp does for them.
_IGNORE_MERGES_PRE = {"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "falcon3"}
# Architectures whose sentencepiece vocabulary is Gemma-style (no dummy prefix, spaces
# replaced by the meta symbol, merge order = order in the file).
_GEMMA_ARCHS = {"gemma", "gemma2", "gemma3", "gemma3n"}
_META = "\u2581"  # sentencepiece's word-boundary symbol


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the model's special tokens, BOS convention and chat template."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
        post_process: bool = False,
    ):
        self.backend = backend
        self._special = {"bos": bos_token, "eos": eos_token, "pad": pad_token, "unk": unk_token}
        self.add_bos_default = bool(add_bos)
        # Encoders (BERT): the backend's post-processor adds [CLS] ... [SEP]; `add_bos`
        # then means "add the special tokens" (default True), as HF's add_special_tokens.
        self.post_process = bool(post_process)
        self.chat_template = chat_template
        if add_bos and not post_process and self.bos_token_id is None:
            raise ValueError(
                f"add_bos=True but the BOS token {bos_token!r} is not in the vocabulary"
            )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(
        cls,
        tokenizer_json: str | Path,
        tokenizer_config: Mapping | None = None,
        chat_template: str | None = None,
    ) -> Tokenizer:
        """From a `tokenizer.json`, with the special tokens of `tokenizer_config` if given."""
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_json))
        # A tokenizer.json may pin padding to a fixed length and truncation (MiniLM's pads
        # and cuts at 128): encode() returns the tokens of the text, nothing added or lost;
        # `encode_batch` pads, and the model refuses inputs longer than its context.
        backend.no_padding()
        backend.no_truncation()
        cfg = dict(tokenizer_config or {})

        def tok(key):
            v = cfg.get(key)
            return v.get("content") if isinstance(v, dict) else v

        bos, eos, pad, unk = tok("bos_token"), tok("eos_token"), tok("pad_token"), tok("unk_token")
        if "add_bos_token" in cfg and cfg["add_bos_token"] is not None:
            add_bos = bool(cfg["add_bos_token"]) and bos is not None
        else:
            add_bos = _post_processor_adds_bos(backend, bos)
        if bos is None and add_bos:
            add_bos = False
        template = (
            chat_template if chat_template is not None else _pick_template(cfg.get("chat_template"))
        )
        post = bos is None and _post_processor_wraps(backend, tok("cls_token"), tok("sep_token"))
        return cls(
            backend,
            bos_token=bos,
            eos_token=eos,
            pad_token=pad,
            unk_token=unk,
            add_bos=add_bos or post,
            chat_template=template,
            post_process=post,
        )

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Tokenizer:
        """From an HF checkpoint directory: tokenizer.json, tokenizer_config.json,
        special_tokens_map.json and a chat template (config entry, chat_template.jinja
        or chat_template.json)."""
        path = Path(path)
        tj = path / "tokenizer.json"
        if not tj.is_file():
            raise FileNotFoundError(f"{path} has no tokenizer.json")
        cfg: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            f = path / name
            if f.is_file():
                cfg.update(json.loads(f.read_text(encoding="utf-8")))
        template = None
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        elif (path / "chat_template.json").is_file():
            template = _pick_template(
                json.loads((path / "chat_template.json").read_text(encoding="utf-8")).get(
                    "chat_template"
                )
            )
        return cls.from_file(tj, cfg, chat_template=template)

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """Rebuild the tokenizer a GGUF file describes from its `tokenizer.ggml.*` metadata.

        `tokenizer.ggml.model` "gpt2" is byte-level BPE (tokens + merges, text split per
        `tokenizer.ggml.pre`); "llama" is sentencepiece-style BPE with scores and byte fallback.
        """
        model = metadata.get("tokenizer.ggml.model")
        tokens = metadata.get("tokenizer.ggml.tokens")
        if model is None or tokens is None:
            raise ValueError(
                "GGUF metadata has no tokenizer (tokenizer.ggml.model / .tokens missing)"
            )
        tokens = list(tokens)
        types = list(metadata.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens))
        arch = metadata.get("general.architecture", "")
        if model == "gpt2":
            backend = _byte_level_bpe(tokens, types, metadata)
            default_add_bos = False
        elif model == "llama":
            backend = _sentencepiece_bpe(tokens, types, metadata, gemma=arch in _GEMMA_ARCHS)
            default_add_bos = True  # llama.cpp's default for sentencepiece vocabularies
        else:
            raise ValueError(
                f"GGUF tokenizer model {model!r} is not supported (supported: 'gpt2', 'llama')"
            )

        def special(key):
            i = metadata.get(f"tokenizer.ggml.{key}")
            return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

        add_bos = metadata.get("tokenizer.ggml.add_bos_token")
        add_bos = default_add_bos if add_bos is None else bool(add_bos)
        bos = special("bos_token_id")
        return cls(
            backend,
            bos_token=bos,
            eos_token=special("eos_token_id"),
            pad_token=special("padding_token_id"),
            unk_token=special("unknown_token_id"),
            add_bos=add_bos and bos is not None,
            chat_template=metadata.get("tokenizer.chat_template"),
        )

    # ------------------------------------------------------------------ special tokens

    def _id(self, which: str) -> int | None:
        tok = self._special[which]
        return None if tok is None else self.backend.token_to_id(tok)

    @property
    def bos_token_id(self) -> int | None:
        return self._id("bos")

    @property
    def eos_token_id(self) -> int | None:
        return self._id("eos")

    @property
    def pad_token_id(self) -> int | None:
        """The padding id: the tokenizer's pad token, else its EOS token."""
        pad = self._id("pad")
        return pad if pad is not None else self.eos_token_id

    @property
    def bos_token(self) -> str | None:
        return self._special["bos"]

    @property
    def eos_token(self) -> str | None:
        return self._special["eos"]

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(int(i))

    # ------------------------------------------------------------------ encode / decode

    def _prefix(self, add_bos: bool | None) -> list[int]:
        add = self.add_bos_default if add_bos is None else add_bos
        if not add or self.post_process:
            return []
        if self.bos_token_id is None:
            raise ValueError("add_bos=True but this tokenizer has no BOS token")
        return [self.bos_token_id]

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; BOS first if `add_bos` (default: the model's convention)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return (
            self._prefix(add_bos)
            + self.backend.encode(text, add_special_tokens=self._specials(add_bos)).ids
        )

    def _specials(self, add_bos: bool | None) -> bool:
        """Whether the backend's post-processor runs (encoders: [CLS] ... [SEP])."""
        return self.post_process and (self.add_bos_default if add_bos is None else add_bos)

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def to_str_tokens(self, text_or_ids, *, add_bos: bool | None = None) -> list[str]:
        """Each token decoded on its own (for labelling plots)."""
        ids = (
            self.encode(text_or_ids, add_bos=add_bos)
            if isinstance(text_or_ids, str)
            else text_or_ids
        )
        return [
            self.backend.decode([int(i)], skip_special_tokens=False)
            for i in np.asarray(ids).reshape(-1)
        ]

    def to_single_token(self, text: str) -> int:
        """The id of `text` if it is exactly one token (no BOS), else a ValueError."""
        ids = self.encode(text, add_bos=False)
        if len(ids) != 1:
            pieces = [self.backend.decode([i]) for i in ids]
            raise ValueError(
                f"{text!r} is not a single token: it encodes to {len(ids)} tokens "
                f"{pieces!r} (ids {ids})"
            )
        return ids[0]

    def encode_batch(
        self, texts: Sequence[str], *, padding_side: str = "right", add_bos: bool | None = None
    ) -> Batch:
        """Encode and pad `texts`. Pad id = pad token, else EOS (else 0)."""
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of strings, got one str")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        texts = list(texts)
        if not texts:
            raise ValueError("encode_batch needs at least one text")
        prefix = self._prefix(add_bos)
        rows = [
            prefix + e.ids
            for e in self.backend.encode_batch(texts, add_special_tokens=self._specials(add_bos))
        ]
        lengths = np.array([len(r) for r in rows], np.int32)
        width = max(1, int(lengths.max()))
        pad = self.pad_token_id
        tokens = np.full((len(rows), width), 0 if pad is None else pad, np.int32)
        mask = np.zeros((len(rows), width), bool)
        for b, r in enumerate(rows):
            sl = slice(0, len(r)) if padding_side == "right" else slice(width - len(r), width)
            tokens[b, sl] = r
            mask[b, sl] = True
        return Batch(tokens, mask, lengths)

    # ------------------------------------------------------------------ chat template

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True, **kwargs
    ) -> str:
        """Render `messages` ([{"role": ..., "content": ...}]) with the model's jinja2 template."""
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template")
        template = _compile_template(self.chat_template)
        context = {
            k: v
            for k, v in (
                ("bos_token", self.bos_token),
                ("eos_token", self.eos_token),
                ("pad_token", self._special["pad"]),
                ("unk_token", self._special["unk"]),
            )
        }
        context.update(kwargs)
        return template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **context
        )

    def __repr__(self) -> str:
        specials = (
            f"specials={self.add_bos_default} ([CLS]/[SEP] by the post-processor)"
            if self.post_process
            else f"add_bos={self.add_bos_default}"
        )
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, "
            f"eos={self.eos_token!r}, {specials}, "
            f"chat_template={'yes' if self.chat_template else 'no'})"
        )


# ---------------------------------------------------------------------- helpers


def _post_processor_wraps(backend: tokenizers.Tokenizer, cls: str | None, sep: str | None) -> bool:
    """True if the post-processor puts `cls` first and `sep` last (BERT-style encoders)."""
    if cls is None or sep is None or None in (backend.token_to_id(cls), backend.token_to_id(sep)):
        return False
    ids = backend.encode("a", add_special_tokens=True).ids
    return (
        len(ids) >= 2 and ids[0] == backend.token_to_id(cls) and ids[-1] == backend.token_to_id(sep)
    )


def _post_processor_adds_bos(backend: tokenizers.Tokenizer, bos: str | None) -> bool:
    if bos is None:
        return False
    bos_id = backend.token_to_id(bos)
    if bos_id is None:
        return False
    with_special = backend.encode("a", add_special_tokens=True).ids
    without = backend.encode("a", add_special_tokens=False).ids
    return len(with_special) > len(without) and with_special[0] == bos_id


def _pick_template(value) -> str | None:
    """tokenizer_config's chat_template: a string, or a list of {"name", "template"}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    return None


_TEMPLATE_CACHE: dict[str, Any] = {}


def _compile_template(source: str):
    if source in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[source]
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for training masks;
        # for rendering it is a no-op.
        tags: ClassVar[set[str]] = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt):
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    template = env.from_string(source)
    _TEMPLATE_CACHE[source] = template
    return template


def _byte_level_bpe(
    tokens: list[str], types: list[int], md: Mapping[str, Any]
) -> tokenizers.Tokenizer:
    """GPT-2 style byte-level BPE from a GGUF vocabulary (`tokenizer.ggml.model` == "gpt2")."""
    merges = md.get("tokenizer.ggml.merges")
    if merges is None:
        raise ValueError("byte-level BPE GGUF tokenizer without tokenizer.ggml.merges")
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    byte_map = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    spelled = []
    for i, (tok, typ) in enumerate(zip(tokens, types)):
        if not set(tok) <= alphabet and typ not in (_CONTROL, _USER_DEFINED):
            # a normal token written in plain UTF-8 rather than the byte alphabet
            tok = "".join(byte_map[b] for b in tok.encode("utf-8"))
        spelled.append(tok)
        vocab.setdefault(tok, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    pre = md.get("tokenizer.ggml.pre") or "default"
    backend = tokenizers.Tokenizer(
        BPE(vocab=vocab, merges=pairs, fuse_unk=False, ignore_merges=pre in _IGNORE_MERGES_PRE)
    )
    if pre in _SPLIT_BY_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLIT_BY_PRE[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre == "smollm":
        # SmolLM's tokenizer.json: every digit on its own, then GPT-2's split.
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    else:
        if pre not in ("default", "gpt2", "gpt-2"):
            warnings.warn(
                f"GGUF pre-tokenizer {pre!r} is not known to mechjax; splitting text "
                "like GPT-2, which may tokenize differently from the model's own tokenizer",
                stacklevel=3,
            )
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    _add_gguf_specials(backend, spelled, types, alphabet)
    return backend


def _sentencepiece_bpe(
    tokens: list[str], types: list[int], md: Mapping[str, Any], *, gemma: bool
) -> tokenizers.Tokenizer:
    """Sentencepiece-style BPE with byte fallback (`tokenizer.ggml.model` == "llama")."""
    if gemma:
        # Gemma stores tokens of several spaces as real spaces; its text uses the meta symbol.
        tokens = [_META * len(t) if t and not t.strip(" ") else t for t in tokens]
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    if md.get("tokenizer.ggml.merges") is not None:
        merges = [tuple(m.split(" ", 1)) for m in md["tokenizer.ggml.merges"]]
    else:
        if gemma:  # Gemma's merge priority is the order of the vocabulary, not its scores
            priority = {tok: -float(i) for i, tok in enumerate(tokens)}
        else:
            scores = md.get("tokenizer.ggml.scores")
            if scores is None:
                raise ValueError("sentencepiece GGUF tokenizer with neither merges nor scores")
            priority = {}
            for tok, s in zip(tokens, scores):
                priority.setdefault(tok, float(s))
        merges = _merges_from_vocab(vocab, priority)
    unk_id = md.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else ("<unk>" if "<unk>" in vocab else None)
    backend = tokenizers.Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    )
    if gemma:
        backend.normalizer = normalizers.Replace(" ", _META)
        backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
        backend.decoder = decoders.Sequence(
            [decoders.Replace(_META, " "), decoders.ByteFallback(), decoders.Fuse()]
        )
    else:
        prefix = md.get("tokenizer.ggml.add_space_prefix")
        prefix = True if prefix is None else bool(prefix)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_META, prepend_scheme="first" if prefix else "never", split=False
        )
        steps = [decoders.Replace(_META, " "), decoders.ByteFallback(), decoders.Fuse()]
        if prefix:
            steps.append(decoders.Strip(content=" ", left=1, right=0))
        backend.decoder = decoders.Sequence(steps)
    _add_gguf_specials(backend, tokens, types, None)
    return backend


def _merges_from_vocab(vocab: dict[str, int], priority: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a vocabulary: every split of a token into two vocabulary
    tokens, best (highest priority of the merged token) first."""
    found = []
    for tok, score in priority.items():
        local = []
        for k in range(1, len(tok)):
            left, right = tok[:k], tok[k:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        found.extend(local)
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in found]


def _add_gguf_specials(
    backend: tokenizers.Tokenizer, tokens: list[str], types: list[int], alphabet: set[str] | None
) -> None:
    """Control tokens become special added tokens, user-defined ones plain added tokens,
    so both are matched whole in text instead of being cut into pieces."""
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, ty in zip(tokens, types)
        if ty == _CONTROL and (alphabet is None or set(t) <= alphabet)
    ]
    if control:
        backend.add_special_tokens(control)
    user = [
        AddedToken(t, normalized=False, special=False)
        for t, ty in zip(tokens, types)
        if ty == _USER_DEFINED
    ]
    if user:
        backend.add_tokens(user)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))
