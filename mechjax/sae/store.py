"""Where an SAE's training activations come from: an activation store, or the model itself.

Two sources, one interface (`source.batch(step) -> batch`, a pytree the compiled training
step reads; `source.sample(n)` for initialisation and evaluation):

- `ActivationStore`: harvest a site once (through `mechjax.harvest`) to memory or to disk
  (`.npy` shards plus `index.json`), then draw shuffled batches: every epoch is a fresh
  permutation of all stored rows (a function of the seed and the epoch alone, so a
  resumed run draws the same batches). In memory the rows live on the device and a batch
  is gathered inside the compiled step (only the [batch] indices cross each step); on
  disk the shards are memory-mapped and each batch is gathered on the host.
- `TokenSource`: token sequences and a model; the compiled step runs the model on them
  and reads the site (XLA drops every layer above the site and the unembedding, since
  nothing reads them), so activations are never stored. Sweeps over SAE settings are
  cheaper from a store; one long run is cheaper on the fly.

Positions before `skip_first` (default 1: the first token, whose residual norm in most
models is tens of times the rest, an attention sink) are left out of both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.errors import InputError
from mechjax.harvest import harvest
from mechjax.model import Model, run
from mechjax.progress import progress_bar, show_progress
from mechjax.typing import Array

__all__ = [
    "ActivationStore",
    "Acts",
    "Gather",
    "TokenSource",
    "Tokens",
    "model_samples",
    "site_acts",
    "token_rows",
]

INDEX_FILE = "index.json"


class Acts(NamedTuple):
    """A batch of activations: inputs x [n, d_in] and targets y [n, d_out] (None: x)."""

    x: Array
    y: Array | None = None


class Gather(NamedTuple):
    """Rows `idx` of tables already on the device (an in-memory store's batch)."""

    x: Array
    y: Array | None
    idx: Array


class Tokens(NamedTuple):
    """Token sequences to run through `model` inside the step."""

    model: Model
    tokens: Array


def site_acts(
    model: Model, tokens: Array, site: str, site_out: str = "", skip_first: int = 1
) -> tuple[Array, Array | None]:
    """The site's activations of every sequence at positions >= `skip_first`, flattened
    to [n * (pos - skip_first), d] (and the output site's, for a transcoder)."""
    capture = (site,) if not site_out else (site, site_out)
    cache = run(model, tokens, capture=capture).cache

    def flat(a):
        a = a[:, skip_first:]
        return a.reshape(-1, a.shape[-1])

    return flat(cache[site]), (flat(cache[site_out]) if site_out else None)


def batch_acts(batch: Any, site: str = "", site_out: str = "", skip_first: int = 1):
    """(x, y) of any source's batch, inside the compiled step (y None: the input)."""
    if isinstance(batch, Gather):
        y = None if batch.y is None else jnp.take(batch.y, batch.idx, axis=0)
        return jnp.take(batch.x, batch.idx, axis=0), y
    if isinstance(batch, Tokens):
        return site_acts(batch.model, batch.tokens, site, site_out, skip_first)
    return batch.x, batch.y


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


class _Shuffle:
    """Row indices of step `s`: consecutive slices of per-epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size < 1 or batch_size > n:
            raise InputError(f"batch_size must be in [1, {n}] (the stored rows), got {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._cache: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = _epoch_order(self.n, self.seed, epoch)
        return self._cache[epoch]

    def __call__(self, step: int) -> np.ndarray:
        start, need, parts = step * self.batch_size, self.batch_size, []
        while need:
            epoch, off = divmod(start, self.n)
            take = min(need, self.n - off)
            parts.append(self.order(epoch)[off : off + take])
            start, need = start + take, need - take
        return np.concatenate(parts)


class ActivationStore:
    """Activations of a site (and a transcoder's output site), harvested once.

    Build with `ActivationStore.harvest(model, tokens, site, ...)` (memory, or disk with
    `out_dir=`), `ActivationStore.open(dir)` (a disk store), or directly from arrays.
    `x` is one array or a list of shards (numpy, possibly memory-mapped).
    """

    def __init__(
        self,
        x: np.ndarray | Sequence[np.ndarray],
        y: np.ndarray | Sequence[np.ndarray] | None = None,
        *,
        site: str = "",
        site_out: str = "",
        on_device: bool | None = None,
    ):
        self.x_shards = [x] if isinstance(x, np.ndarray) else list(x)
        self.y_shards = None if y is None else ([y] if isinstance(y, np.ndarray) else list(y))
        if not self.x_shards or any(s.ndim != 2 for s in self.x_shards):
            raise InputError("an activation store needs 2-D [rows, d] arrays")
        if self.y_shards is not None and [len(s) for s in self.y_shards] != [
            len(s) for s in self.x_shards
        ]:
            raise InputError("input and output activations must have the same rows per shard")
        self.site, self.site_out = site, site_out
        self.n = sum(len(s) for s in self.x_shards)
        self.d_in = int(self.x_shards[0].shape[1])
        self.d_out = self.d_in if self.y_shards is None else int(self.y_shards[0].shape[1])
        mapped = any(isinstance(s, np.memmap) for s in self.x_shards)
        self.on_device = (not mapped) if on_device is None else on_device
        self._table: tuple[Array, Array | None] | None = None
        self._offsets = np.cumsum([0] + [len(s) for s in self.x_shards])

    def __repr__(self) -> str:
        where = "device" if self.on_device else f"{len(self.x_shards)} shards on the host"
        return f"ActivationStore({self.site!r}, rows={self.n}, d_in={self.d_in}, {where})"

    # ------------------------------------------------------------------ building

    @classmethod
    def harvest(
        cls,
        model: Model,
        tokens: Any,
        site: str,
        site_out: str = "",
        *,
        skip_first: int = 1,
        batch_size: int = 8,
        out_dir: str | Path | None = None,
        shard_rows: int = 65536,
        progress: bool | None = None,
    ) -> ActivationStore:
        """Run `tokens [n, pos]` through `model` and keep `site` at positions >=
        `skip_first`: in memory, or as `.npy` shards of about `shard_rows` rows under
        `out_dir` (then the store memory-maps them)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] <= skip_first:
            raise InputError(
                f"tokens must be [n, pos] with pos > skip_first = {skip_first}, got {tokens.shape}"
            )
        sites = [site] + ([site_out] if site_out else [])
        per_seq = tokens.shape[1] - skip_first
        seqs = max(1, shard_rows // per_seq)
        spans = [(s, min(s + seqs, len(tokens))) for s in range(0, len(tokens), seqs)]
        xs, ys = [], []
        out = Path(out_dir) if out_dir is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        bar = progress_bar(show_progress(progress, len(spans) > 1), len(spans), "store", "shard")
        with bar:
            for i, (a, b) in enumerate(spans):
                got = harvest(model, tokens[a:b], sites, batch_size=batch_size, progress=False)
                parts = [
                    np.ascontiguousarray(got[s][:, skip_first:].reshape(-1, got[s].shape[-1]))
                    for s in sites
                ]
                if out is not None:
                    for name, arr in zip(("x", "y"), parts):
                        np.save(out / f"{name}_{i:05d}.npy", arr)
                    parts = []
                xs.append(parts[0] if parts else None)
                ys.append(parts[1] if len(parts) > 1 else None)
                bar.update(1)
        if out is not None:
            index = {
                "site": site,
                "site_out": site_out,
                "skip_first": skip_first,
                "shards": len(spans),
                "rows": int(len(tokens) * per_seq),
            }
            (out / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
            return cls.open(out)
        return cls(
            [x for x in xs if x is not None],
            [y for y in ys if y is not None] if site_out else None,
            site=site,
            site_out=site_out,
        )

    @classmethod
    def open(cls, directory: str | Path) -> ActivationStore:
        """A disk store written by `harvest(..., out_dir=)`: shards memory-mapped."""
        d = Path(directory)
        path = d / INDEX_FILE
        if not path.exists():
            raise InputError(f"{d} is not an activation store: {INDEX_FILE} is missing")
        index = json.loads(path.read_text())
        xs, ys = [], []
        for i in range(int(index["shards"])):
            for name, into in (("x", xs), ("y", ys)):
                f = d / f"{name}_{i:05d}.npy"
                if name == "y" and not index["site_out"]:
                    continue
                if not f.exists():
                    raise InputError(f"activation store {d}: shard {f.name} is missing")
                into.append(np.load(f, mmap_mode="r"))
        store = cls(xs, ys or None, site=index["site"], site_out=index["site_out"])
        if store.n != index["rows"]:
            raise InputError(
                f"activation store {d}: {INDEX_FILE} says {index['rows']} rows, the shards "
                f"hold {store.n}"
            )
        return store

    # ------------------------------------------------------------------ reading

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Host copies of rows `idx` (any order) across shards."""
        idx = np.asarray(idx)
        order = np.argsort(idx, kind="stable")
        shard = np.searchsorted(self._offsets, idx[order], side="right") - 1
        xs = np.empty((len(idx), self.d_in), np.float32)
        ys = None if self.y_shards is None else np.empty((len(idx), self.d_out), np.float32)
        for s in np.unique(shard):
            pick = order[shard == s]
            local = idx[pick] - self._offsets[s]
            xs[pick] = self.x_shards[s][local]
            if ys is not None and self.y_shards is not None:
                ys[pick] = self.y_shards[s][local]
        return xs, ys

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """`n` rows drawn without replacement (host arrays), for init and evaluation."""
        n = min(n, self.n)
        return self.rows(np.random.default_rng(seed).choice(self.n, n, replace=False))

    def _device_table(self) -> tuple[Array, Array | None]:
        if self._table is None:
            x = jnp.asarray(np.concatenate(self.x_shards).astype(np.float32, copy=False))
            y = None
            if self.y_shards is not None:
                y = jnp.asarray(np.concatenate(self.y_shards).astype(np.float32, copy=False))
            self._table = (x, y)
        return self._table

    def batches(self, batch_size: int, seed: int = 0):
        """`fn(step) -> batch` of `batch_size` shuffled rows: a `Gather` from the device
        table in memory, `Acts` gathered on the host from disk shards."""
        shuffle = _Shuffle(self.n, batch_size, seed)
        if self.on_device:
            x, y = self._device_table()
            return lambda step: Gather(x, y, jnp.asarray(shuffle(step)))

        def host_batch(step: int) -> Acts:
            x, y = self.rows(shuffle(step))
            return Acts(jnp.asarray(x), None if y is None else jnp.asarray(y))

        return host_batch


class TokenSource:
    """Token sequences run through `model` inside the training step (no stored acts).

    `tokens [n, pos]`: each batch is `seqs_per_batch` sequences, i.e.
    `seqs_per_batch * (pos - skip_first)` activation rows, drawn by per-epoch shuffles.
    """

    def __init__(
        self,
        model: Model,
        tokens: Any,
        site: str,
        site_out: str = "",
        *,
        skip_first: int = 1,
    ):
        self.model, self.site, self.site_out, self.skip_first = model, site, site_out, skip_first
        self.tokens = np.asarray(tokens, np.int32)
        if self.tokens.ndim != 2 or self.tokens.shape[1] <= skip_first:
            raise InputError(
                f"tokens must be [n, pos] with pos > skip_first = {skip_first}, "
                f"got {self.tokens.shape}"
            )
        self.per_seq = self.tokens.shape[1] - skip_first

    def __repr__(self) -> str:
        return f"TokenSource({self.site!r}, sequences={len(self.tokens)}, rows/seq={self.per_seq})"

    def seqs_for(self, batch_rows: int) -> int:
        """Sequences per batch for about `batch_rows` activation rows."""
        return max(1, int(round(batch_rows / self.per_seq)))

    def batches(self, seqs_per_batch: int, seed: int = 0):
        shuffle = _Shuffle(len(self.tokens), seqs_per_batch, seed)
        model = self.model
        return lambda step: Tokens(model, jnp.asarray(self.tokens[shuffle(step)]))

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        seqs = min(len(self.tokens), max(1, -(-n // self.per_seq)))
        pick = np.random.default_rng(seed).choice(len(self.tokens), seqs, replace=False)
        x, y = jax.jit(site_acts, static_argnums=(2, 3, 4))(
            self.model, jnp.asarray(self.tokens[np.sort(pick)]), self.site, self.site_out,
            self.skip_first,
        )  # fmt: skip
        return np.asarray(x)[:n], (None if y is None else np.asarray(y)[:n])


# ------------------------------------------------------------------------ token sources


def model_samples(
    model: Model, n: int, ctx_len: int, *, seed: int = 0, batch: int = 16
) -> np.ndarray:
    """int32 [n, ctx_len]: the model's own text, sampled at temperature 1 from the
    document separator (`<|endoftext|>`, else BOS, else EOS), never stopping early."""
    from mechjax.generation import generate

    tok = model.tokenizer
    if tok is None:
        raise InputError("sampling a token source needs the model's tokenizer")
    start = tok.token_to_id("<|endoftext|>") if hasattr(tok, "token_to_id") else None
    start = (
        start
        if start is not None
        else (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
    )
    rows = []
    for i in range(0, n, batch):
        prompt = np.full((batch, 1), start, np.int32)
        gen = generate(
            model,
            prompt,
            ctx_len - 1,
            temperature=1.0,
            key=jax.random.PRNGKey(seed + i),
            stop_tokens=(),
        )
        rows.append(np.concatenate([prompt, np.asarray(gen.tokens, np.int32)], 1))
    return np.concatenate(rows)[:n]


def token_rows(
    model: Model | None,
    source: Any = "corpus",
    *,
    ctx_len: int = 128,
    n_chunks: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """int32 [n, ctx_len] token rows from any source: an int array (used as given),
    "corpus" (the offline English corpus, `mechjax.corpus`), "samples" (the model's own
    text; needs `n_chunks`), or a path to a text file, JSONL file or directory of them
    (`mechjax.corpus.read_documents`), chunked by `mechjax.corpus.token_chunks`."""
    from mechjax import corpus

    if not isinstance(source, (str, Path)):
        arr = np.asarray(source)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"token rows must be an int [n, pos] array, got {arr.shape} {arr.dtype}"
            )
        return arr.astype(np.int32)
    if model is None:
        raise InputError(f"token source {str(source)!r} needs the model (its tokenizer)")
    if source == "corpus":
        return corpus.token_chunks(model, ctx_len=ctx_len, n_chunks=n_chunks, seed=seed)
    if source == "samples":
        if n_chunks is None:
            raise InputError(
                "a 'samples' token source needs n_chunks (how many sequences to sample)"
            )
        return model_samples(model, n_chunks, ctx_len, seed=seed)
    docs = corpus.read_documents(source)
    return corpus.token_chunks(model, docs, ctx_len=ctx_len, n_chunks=n_chunks, seed=seed)
