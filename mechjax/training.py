"""Training any pure model: a jit-compiled step, a resumable loop, checkpoints as an axis.

What this module owns:

- `TrainState`: params, optimizer state, step counter and PRNG key, as one pytree.
- `make_train_step(loss_fn, optimizer)`: one jit-compiled optax update for any
  `loss_fn(params, batch, key) -> (loss, metrics)`.
- `train(...)`: the loop. Data comes from `batch_fn(key, step)` with
  `key = fold_in(data_key, step)`, so the batch of step `s` is a function of the seed and
  `s` alone; the step's own key is split from `TrainState.rng`, which is checkpointed.
  Metrics go to `metrics.jsonl` (one row per step; `metrics.csv` optional) and a tqdm bar;
  `eval_fn(params)` runs every `eval_every` steps into `eval.jsonl`.
- orbax-checkpoint saves every `checkpoint_every` steps (orbax writes into a temporary
  directory and renames it when complete, so a kill never leaves a half-written step).
  A rerun with the same `out_dir` resumes from the latest step and reaches bit-identical
  parameters to an uninterrupted run: same compiled step, same restored arrays, same keys.
- `lr_schedule(lr, steps, warmup=, decay=)`: linear warmup, a constant phase, then a
  linear or cosine decay to zero over the last `decay_steps` (SAE training's schedule).
- Checkpoints as an axis: `load_checkpoint_stack(dir)` returns every saved step's params
  stacked along a leading axis, and `map_over_checkpoints(fn, stacked)` is `jax.vmap(fn)`,
  so a progress measure over training is one batched program.

A checkpoint directory holds one folder per step with two orbax items, `params` and
`train` (optimizer state, step, rng), so the params of every step load without knowing
the optimizer; `run.json` records the seed so a resume with another seed is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from mechjax.errors import CheckpointError

Array = jax.Array
LossFn = Callable[[Any, Any, Array], tuple[Array, Mapping[str, Array]]]
BatchFn = Callable[[Array, int], Any]

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
CSV_FILE = "metrics.csv"
RUN_FILE = "run.json"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a resumed run needs: params, optimizer state, step, PRNG key.

    `step` is an int32 scalar counting completed updates; `rng` is a raw uint32[2] key
    (`jax.random.PRNGKey`), split once per step.
    """

    params: Any
    opt_state: Any
    step: Array
    rng: Array


class TrainResult(NamedTuple):
    """What `train` returns: the final state and the host-side rows logged by this call."""

    state: TrainState
    history: list[dict]
    evals: list[dict]


def init_train_state(
    params: Any, optimizer: optax.GradientTransformation, key: Array
) -> TrainState:
    """A fresh `TrainState` at step 0."""
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), _raw_key(key))


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, *, jit: bool = True
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """One optimizer update: `step(state, batch) -> (new_state, metrics)`.

    Args:
      loss_fn: `loss_fn(params, batch, key) -> (loss, metrics)`, pure; `metrics` a dict of
        scalars (may be empty).
      optimizer: any optax transformation.
      jit: compile the step (default). `False` is for debugging only.
    Returns:
      The step function; its metrics hold `loss`, `grad_norm` and `loss_fn`'s own metrics.
    """

    def step(state: TrainState, batch) -> tuple[TrainState, dict]:
        rng, key = jax.random.split(state.rng)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **dict(aux), "grad_norm": optax.global_norm(grads)}
        return TrainState(params, opt_state, state.step + 1, rng), metrics

    return jax.jit(step) if jit else step


def lr_schedule(
    lr: float,
    steps: int,
    *,
    warmup: int = 0,
    decay: str = "none",
    decay_steps: int | None = None,
    final: float = 0.0,
) -> optax.Schedule:
    """Linear warmup from 0 over `warmup` steps, constant `lr`, then a decay to
    `final * lr` over the last `decay_steps` (default: a fifth of `steps`).

    `decay`: "none", "linear" or "cosine". Raises ValueError for another name or a
    warmup and decay that do not fit in `steps`.
    """
    if decay not in ("none", "linear", "cosine"):
        raise ValueError(f"decay must be 'none', 'linear' or 'cosine', got {decay!r}")
    d = 0 if decay == "none" else (steps // 5 if decay_steps is None else decay_steps)
    if warmup < 0 or d < 0 or warmup + d > steps:
        raise ValueError(f"warmup {warmup} + decay {d} steps do not fit in {steps} steps")
    parts = [optax.linear_schedule(0.0, lr, warmup)] if warmup else []
    parts.append(optax.constant_schedule(lr))
    if d:
        tail = (
            optax.linear_schedule(lr, final * lr, d)
            if decay == "linear"
            else optax.cosine_decay_schedule(lr, d, alpha=final)
        )
        parts.append(tail)
    bounds = ([warmup] if warmup else []) + ([steps - d] if d else [])
    return optax.join_schedules(parts, bounds) if bounds else parts[0]


# ----------------------------------------------------------------------------- the loop


def train(
    loss_fn: LossFn | None,
    optimizer: optax.GradientTransformation,
    params: Any,
    batch_fn: BatchFn,
    *,
    steps: int,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    max_to_keep: int | None = None,
    resume: bool = True,
    eval_fn: Callable[[Any], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    callbacks: Sequence[Callable[[int, TrainState, dict], None]] = (),
    stop_after: int | None = None,
    csv_log: bool = False,
    progress: bool = True,
    flush_every: int = 100,
    step_fn: Callable | None = None,
) -> TrainResult:
    """Train `params` for `steps` updates; resumable and deterministic for a seed.

    Args:
      loss_fn: `loss_fn(params, batch, key) -> (loss, metrics)`; None when `step_fn`
        is given.
      optimizer: an optax transformation.
      params: initial parameters (ignored when a checkpoint is resumed).
      batch_fn: `batch_fn(key, step) -> batch`; called with `fold_in(data_key, step)`
        where `data_key` comes from `seed`, and `step` the 0-based index of the update.
      steps: total number of updates of the run (not of this call).
      seed: root of every key of the run (data keys and the per-step keys).
      out_dir: where logs, `run.json` and checkpoints go; `None` keeps nothing on disk.
      checkpoint_every: save after every k-th update and at the end (0: only at the end,
        if `out_dir` is given).
      max_to_keep: checkpoints kept (None: all; keep all to study training dynamics).
      resume: continue from the latest checkpoint in `out_dir` if there is one.
      eval_fn: `eval_fn(params) -> dict of scalars`, run at step 0 (fresh runs), every
        `eval_every` updates and at the end; rows go to `eval.jsonl`.
      callbacks: `cb(step, state, metrics)` after every update (metrics on device);
        an exception raised here stops the run like a kill (useful in tests).
      stop_after: stop once this many updates are done, without a final save (a kill).
      csv_log: also write `metrics.csv`.
      progress: show a tqdm progress bar.
      flush_every: metrics are fetched from the device and written every this many steps.
      step_fn: a prebuilt `make_train_step(loss_fn, optimizer)` to reuse its compilation.
    Returns:
      `TrainResult(state, history, evals)` with the rows logged by this call.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    root = jax.random.PRNGKey(seed)
    data_key, rng = jax.random.split(root)
    state = init_train_state(params, optimizer, rng)
    if step_fn is None:
        if loss_fn is None:
            raise ValueError("train needs a loss_fn, or a prebuilt step_fn")
        step_fn = make_train_step(loss_fn, optimizer)
    out = Path(out_dir) if out_dir is not None else None
    manager = None
    if out is not None:
        manager, state = _open_run(out, seed, state, resume, max_to_keep)
    logger = _Logger(out, csv_log)
    start = int(state.step)
    history: list[dict] = []
    evals: list[dict] = []
    pending: list[tuple[int, dict]] = []
    bar = tqdm(total=steps, initial=start, disable=not progress, desc="train", leave=False)

    def flush():
        rows = [{"step": s, **_to_host(m)} for s, m in jax.device_get(pending)]
        pending.clear()
        logger.write(METRICS_FILE, rows)
        history.extend(rows)
        if rows:
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}", refresh=False)

    def evaluate(s: int):
        assert eval_fn is not None
        row = {"step": s, **_to_host(eval_fn(state.params))}
        logger.write(EVAL_FILE, [row], to_csv=False)
        evals.append(row)

    try:
        if eval_fn is not None and start == 0:
            evaluate(0)
        last = steps if stop_after is None else min(steps, stop_after)
        for s in range(start, last):
            batch = batch_fn(_fold_in(data_key, s), s)
            state, metrics = step_fn(state, batch)
            done = s + 1
            pending.append((done, metrics))
            for cb in callbacks:
                cb(done, state, metrics)
            bar.update(1)
            if len(pending) >= flush_every:
                flush()
            if eval_fn is not None and (done == steps or (eval_every and done % eval_every == 0)):
                flush()
                evaluate(done)
            if manager is not None and (
                done == steps or (checkpoint_every and done % checkpoint_every == 0)
            ):
                flush()
                _save(manager, done, state)
        flush()
    finally:
        bar.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return TrainResult(state, history, evals)


def _open_run(out: Path, seed: int, state: TrainState, resume: bool, max_to_keep):
    """Checkpoint manager of `out` and the state to start from (restored or fresh)."""
    out.mkdir(parents=True, exist_ok=True)
    _check_run_file(out, seed)
    manager = _manager(out / "checkpoints", max_to_keep)
    latest = manager.latest_step()
    if resume and latest is not None:
        try:
            state = _restore(manager, latest, state)
        except Exception:
            manager.close()
            raise
    elif not resume:
        if latest is not None:
            saved = list(manager.all_steps())
            manager.close()
            raise CheckpointError(
                f"{out} already holds checkpoints (steps {saved}) and resume=False; "
                "use a new out_dir or delete them"
            )
        for name in (METRICS_FILE, EVAL_FILE, CSV_FILE):
            (out / name).unlink(missing_ok=True)
    _truncate_logs(out, int(state.step))
    return manager, state


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: str | os.PathLike, state: TrainState) -> None:
    """Save `state` as step `int(state.step)` under `directory` (an orbax step folder)."""
    manager = _manager(Path(directory), None)
    try:
        _save(manager, int(state.step), state)
    finally:
        manager.wait_until_finished()
        manager.close()


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """The steps saved under `directory` (a run's `out_dir` or its `checkpoints/`)."""
    return sorted(_manager(_ckpt_dir(directory), None, create=False).all_steps())


def restore_checkpoint(
    directory: str | os.PathLike, like: TrainState, step: int | None = None
) -> TrainState:
    """The `TrainState` saved at `step` (default: latest); `like` gives the structure."""
    manager = _manager(_ckpt_dir(directory), None, create=False)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint under {directory}")
    return _restore(manager, step, like)


def load_checkpoint_stack(
    directory: str | os.PathLike, *, like: Any = None, steps: Sequence[int] | None = None
) -> tuple[np.ndarray, Any]:
    """Params of every saved step, stacked along a new leading axis.

    Args:
      directory: a run's `out_dir` (or its `checkpoints/` folder).
      like: optional params template; the saved tree must match its structure, shapes
        and dtypes (else `CheckpointError`). Without it the saved structure is used.
      steps: which steps to load (default: all, ascending).
    Returns:
      `(steps [n_ckpt] int array, stacked params with leaves [n_ckpt, ...])`.
    """
    manager = _manager(_ckpt_dir(directory), None, create=False)
    all_steps = sorted(manager.all_steps())
    if not all_steps:
        raise CheckpointError(f"no checkpoint under {directory}")
    steps = all_steps if steps is None else list(steps)
    missing = sorted(set(steps) - set(all_steps))
    if missing:
        raise CheckpointError(
            f"steps {missing} are not saved under {directory}; saved: {all_steps}"
        )
    trees = []
    for s in steps:
        _check_item(manager, s, "params", like)
        tree = manager.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore(like)))
        trees.append(tree["params"])
    first = jax.tree_util.tree_structure(trees[0])
    for s, t in zip(steps, trees):
        if jax.tree_util.tree_structure(t) != first or _shapes(t) != _shapes(trees[0]):
            raise CheckpointError(
                f"checkpoint at step {s} has a different params structure than step {steps[0]}; "
                "checkpoints of one run must share one structure to be stacked"
            )
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)
    return np.asarray(steps, dtype=np.int64), stacked


def map_over_checkpoints(fn: Callable, stacked_params: Any, *args: Any) -> Any:
    """`jax.vmap(fn)` over the leading (checkpoint) axis; `args` are shared by all."""
    return jax.vmap(fn, in_axes=(0,) + (None,) * len(args))(stacked_params, *args)


# ------------------------------------------------------------------------------ internals


_fold_in = jax.jit(jax.random.fold_in)  # one dispatch per step instead of an eager op chain


def _raw_key(key: Array) -> Array:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


def _ckpt_dir(directory) -> Path:
    d = Path(directory)
    return d / "checkpoints" if (d / "checkpoints").is_dir() else d


def _manager(directory: Path, max_to_keep: int | None, create: bool = True):
    if not create and not directory.is_dir():
        raise CheckpointError(f"no checkpoint under {directory}: the directory does not exist")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False
    )
    handlers = {"params": ocp.StandardCheckpointHandler(), "train": ocp.StandardCheckpointHandler()}
    return ocp.CheckpointManager(directory.absolute(), options=options, item_handlers=handlers)


def _train_part(state: TrainState) -> dict:
    return {"opt_state": state.opt_state, "step": state.step, "rng": state.rng}


def _save(manager, step: int, state: TrainState) -> None:
    manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave(_train_part(state)),
        ),
    )


def _restore(manager, step: int, like: TrainState) -> TrainState:
    _check_item(manager, step, "params", like.params)
    _check_item(manager, step, "train", _train_part(like))
    try:
        r = manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(like.params),
                train=ocp.args.StandardRestore(_train_part(like)),
            ),
        )
    except Exception as e:  # orbax's own errors do not say which run or step
        raise CheckpointError(f"could not restore step {step} from {manager.directory}: {e}") from e
    t = r["train"]
    return TrainState(r["params"], t["opt_state"], jnp.asarray(t["step"]), jnp.asarray(t["rng"]))


def _shapes(tree) -> list[tuple]:
    return [(tuple(np.shape(x)), str(np.dtype(_dtype(x)))) for x in jax.tree_util.tree_leaves(tree)]


def _paths(tree) -> dict[str, tuple]:
    """Leaf path -> (shape, dtype); namedtuple fields and list items both by position."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = []
        for k in path:
            if isinstance(k, jax.tree_util.DictKey):
                parts.append(str(k.key))
            elif isinstance(k, jax.tree_util.SequenceKey):
                parts.append(str(k.idx))
            elif isinstance(k, jax.tree_util.GetAttrKey):
                parts.append(k.name)
            else:
                parts.append(str(getattr(k, "idx", k)))
        out[".".join(parts)] = (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
    return out


def _check_item(manager, step: int, item: str, like) -> None:
    """Raise a readable `CheckpointError` when the saved tree does not fit `like`."""
    if like is None:
        return
    try:
        saved = manager.item_metadata(step)[item]
    except Exception as e:
        raise CheckpointError(f"step {step} under {manager.directory} has no item {item!r}") from e
    if saved is None:
        raise CheckpointError(f"step {step} under {manager.directory} has no item {item!r}")
    tree = getattr(saved, "tree", saved)
    got = _paths(tree)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), _dtype(x)), like)
    want = _paths(abstract)
    if item == "train":
        # optax states are namedtuples, saved as lists, and dataclass params (an SAE) are
        # saved as dicts with sorted keys: the paths differ, so compare the leaves' shapes
        got, want = sorted(got.values()), sorted(want.values())
        if got != want:
            raise CheckpointError(
                f"optimizer state saved at step {step} under {manager.directory} does not match "
                f"the optimizer of this run ({len(got)} saved leaves vs {len(want)} expected); "
                "use the same optimizer or a new out_dir"
            )
        return
    if got != want:
        only_saved = sorted(set(got) - set(want))
        only_new = sorted(set(want) - set(got))
        changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
        details = []
        if only_saved:
            details.append(f"only in the checkpoint: {only_saved[:5]}")
        if only_new:
            details.append(f"only in this run: {only_new[:5]}")
        if changed:
            k = changed[0]
            details.append(f"different shape/dtype: {k} saved {got[k]} vs {want[k]}")
        raise CheckpointError(
            f"params saved at step {step} under {manager.directory} do not match this run's "
            f"params tree ({'; '.join(details)}); use a matching model or a new out_dir"
        )


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _to_host(metrics: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in metrics.items():
        a = np.asarray(v)
        out[k] = a.item() if a.size == 1 else a.tolist()
    return out


def _check_run_file(out: Path, seed: int) -> None:
    path = out / RUN_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("seed") != seed and (out / "checkpoints").is_dir():
            raise CheckpointError(
                f"{out} holds a run with seed {saved.get('seed')}, not {seed}; resuming it "
                "with another seed would not reproduce it (use a new out_dir)"
            )
    path.write_text(json.dumps({"seed": seed}) + "\n")


def _truncate_logs(out: Path, step: int) -> None:
    """Drop log rows past the restored step: a killed run logged steps it then lost."""
    for name in (METRICS_FILE, EVAL_FILE):
        path = out / name
        if not path.exists():
            continue
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))
    path = out / CSV_FILE
    if path.exists():
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        keep = rows[:1] + [r for r in rows[1:] if int(r[0]) <= step]
        with path.open("w", newline="") as f:
            csv.writer(f).writerows(keep)


class _Logger:
    """Appends rows to JSONL files (and the optional CSV) under `out`."""

    def __init__(self, out: Path | None, csv_log: bool):
        self.out = out
        self.csv_log = csv_log and out is not None
        self._csv_fields: list[str] | None = None
        if out is not None and self.csv_log and (out / CSV_FILE).exists():
            with (out / CSV_FILE).open(newline="") as f:
                self._csv_fields = next(csv.reader(f), None)

    def write(self, name: str, rows: list[dict], to_csv: bool = True) -> None:
        if self.out is None or not rows:
            return
        with (self.out / name).open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        if to_csv and self.csv_log:
            self._write_csv(rows)

    def _write_csv(self, rows: list[dict]) -> None:
        assert self.out is not None  # csv_log is off without an output folder
        path = self.out / CSV_FILE
        new = self._csv_fields is None
        fields = self._csv_fields = list(rows[0]) if new else self._csv_fields
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields or [], extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(rows)
