"""The toy part of the DAS reproduction: a small transformer whose intermediate variable
sits at a known place by construction, and DAS finding it there and nowhere else.

Task. Three digit tokens `a b c` (vocabulary: the digits 0-9, nothing else). Two
next-token targets: at b's position the intermediate variable `s = T1[a, b]`, at c's
position the output `y = T2[s, c]`. T1 and T2 are fixed random Latin squares of order 10
(`latin_square`: T[i, j] = sigma((pi(i) + rho(j)) mod 10) for random permutations sigma,
pi, rho, so every row and column is a permutation: changing s, a, b or c alone always
changes y). The high-level causal model (`causal_model`) is inputs a, b, c -> s -> y.

Model: the 2-layer toy transformer of `models/toy.py` (learned positions, pre-LN,
d_model 32, 4 heads of 8 dimensions, GELU MLP of 128), trained with
`mechjax.training.train` (AdamW, warmup then cosine decay, gradient clipping) on uniform
random inputs, cross-entropy on both targets (the mean of the two).
The inputs are only 1000, so the model is trained on the whole input distribution; what
is held out are the (base, source) interchange pairs DAS is evaluated on.

Why s must be at b's position, and why resid_pre of layer 1 there is the right site. The
target at b forces s to be computed at b: by causal masking b's position sees a and b
only, and b's final residual must decode to s. If c's position uses that s, it has to
read it with layer 1's attention (the last layer that moves information between
positions), so s is then at b in `resid_pre` of layer 1. What the construction cannot
force is that c uses it: c's position sees a and b too and could recompute s. Identity
patching of b's whole vector at layer 1 (an upper bound on any featurizer there) measures
this, and it decided the construction (exploratory runs of the same model and task):

- mod-10 sums (s = a + b, y = s + c, the obvious choice) fail: y = a + b + c is symmetric,
  one attention layer gathers it as a bag of digits and c's position computes it
  directly. Patching b's vector moves the output on almost no pair: IIA 0.004, 0.000,
  0.000 on three seeds with the settings below (0.013 and 0.001 with weaker ones);
- Latin squares with a weak weight decay (0.01) partly recompute: IIA 1.0, 0.85, 0.78,
  0.72 on four seeds (0.1: 0.92, 0.99, 0.81; 0.1 for twice the steps: 0.99 to 1.0);
- a fourth token "=" after c carrying the answer works at the settings below (1.0 on
  three seeds) but is more fragile at weaker ones (0.30 on one seed at weight decay 0.1),
  so the answer is predicted at c: each layer's intended work is then the same, one
  previous-token fetch and one lookup with the position's own token (layer 0 at b: fetch
  a, look up T1 with b; layer 1 at c: fetch s from b, look up T2 with c);
- with weight decay 0.3 (the settings here: AdamW, lr 5e-3, 2000 steps of 128 inputs)
  the redundant path is gone: IIA of b's vector 1.0 on every seed tried (3 exploration
  seeds at 1000 steps, 5 at 2000, the 5 of the full setting, 4 of the smoke setting).
  Much shorter training (600 steps) leaves some seeds without y learnt (accuracy 0.1).

DAS. A rotation featurizer (`mechjax.causal.featurizers.rotation(key, d_model, k)`,
k = 8: s has 10 values, whose class means span up to 9 dimensions) trained with
`mechjax.causal.das.train` (Adam, lr 1e-2, 400 steps of 64 pairs) on 2000 train pairs,
IIA (`das.iia`) on 1000 held-out pairs (none of them a train pair). The pairs of a
variable are drawn uniformly among the (base, source) inputs where the variable's value
differs, so the label always changes: an intervention that does nothing scores 0. Sites
and variables, all at `resid_pre`:

- right site: variable s at b's position, layer 1;
- wrong site: variable s at a's position, layer 1. a's position sees only a, and given
  a_src the source's s = T1[a_src, b_src] is uniform over the 9 values other than the
  base's (b_src is uniform and T1[a_src, .] a permutation): whatever any featurizer does
  there, on any model, the expected IIA is at most 1/9;
- wrong variable: c at b's position, layer 1 (label T2[s_base, c_src]). b's position
  cannot see c, so c_src is independent of everything the source's vector there holds: at
  most 1/9 again, for any model and featurizer. Beside it, not bounded by construction,
  the inputs a and b at b's position: the position sees both, but what layer 1 reads from
  it is s, already computed, so no subspace swap makes the output follow a_src with
  b_base kept (or b_src with a_base), unless the model also reads a or b from there;
- ceiling: the identity featurizer (b's whole vector patched) at the right site; floor: the
  random rotation DAS starts from, untrained; the right site for k = 1, 2, 4, 6;
- grid: DAS for s at every (position, layer) (`das.search`). At layer 0 (the embeddings)
  each position holds its own token only, so the 1/9 bound holds at all three.

Chance: 1/9 = 0.111, the IIA of a uniform guess among the 9 labels that differ from the
base output, and the bound above (in expectation; with 1000 test pairs the sampling sd is
about 0.01); 0 is doing nothing.

Measured, full setting (5 model seeds; ranges over seeds):
- model accuracy on all 1000 inputs: s 1.000, y 1.000 on every seed (15-22 s of training
  each on a shared 2-core CPU; the whole run 538 s, most of it compilation);
- right site IIA 0.999-1.000 (mean 1.000); identity ceiling 1.000; untrained rotation
  0.029-0.102;
- wrong site 0.000 on every seed (no rotation at a's position moves the output: layer 1
  does not read a's position at all);
- wrong variable c 0.064-0.071 (mean 0.067); a at b 0.068-0.082; b at b 0.049-0.085;
- right site by k: k = 1 0.07-0.17, 2 0.29-0.42, 4 0.84-1.00 (0.844 and 0.923 on two
  seeds: s takes more than 4 dimensions there), 6 0.998-1.000, 8 0.999-1.000;
- grid for s: layer 0 at a, b, c 0.067-0.100; layer 1 at a 0.000, at b 0.999-1.000, at
  c 0.057-0.079.
Quick (1 seed, 1000 training steps): right 1.000, wrong site 0.000, wrong variable c
0.085 (a 0.086, b 0.065), identity 1.000, untrained 0.048; 54 s. Smoke (the test: 1000
training steps, 512 + 512 pairs, 200 DAS steps): right 1.000, wrong site 0.000, wrong
variable 0.062, identity 1.000, untrained 0.047, in 30-50 s by the machine's load; with
model seeds 1, 2, 3 instead: right 0.996-0.998, wrong site 0.000, wrong variable
0.074-0.086.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mechjax import training
from mechjax.causal import das
from mechjax.causal import featurizers as F
from mechjax.causal.causal_models import CausalModel
from mechjax.causal.data import CounterfactualData
from mechjax.io.families import family_of_module
from mechjax.model import Model
from mechjax.models import toy

__all__ = [
    "CHANCE",
    "POSITIONS",
    "RIGHT_LAYER",
    "SETTINGS",
    "at_position",
    "causal_model",
    "counterfactual_pairs",
    "latin_square",
    "model_config",
    "run",
    "tables",
    "train_model",
]

Array = jax.Array

N_DIGITS = 10
SEQ_LEN = 3  # a b c
POSITIONS = {"a": 0, "b": 1, "c": 2}
S_POS, Y_POS = POSITIONS["b"], POSITIONS["c"]  # where the targets s and y are predicted
RIGHT_LAYER = 1  # resid_pre of layer 1: after layer 0 computed s at b
CHANCE = 1 / (N_DIGITS - 1)  # a uniform guess among the labels that differ from the base's
TASK = "toy_chain"

_BASE: dict[str, Any] = {
    "seeds": (0, 1, 2, 3, 4),  # model seeds (one trained model each)
    "table_seed": 0,  # the Latin squares T1, T2
    "pairs_seed": 0,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 4,
    "steps": 2000,
    "batch": 128,
    "lr": 5e-3,
    "warmup": 100,
    "weight_decay": 0.3,
    "das_k": 8,
    "k_sweep": (1, 2, 4, 6),  # more DAS dimensions tried at the right site
    "das_steps": 400,
    "das_batch": 64,
    "das_lr": 1e-2,
    "n_train_pairs": 2000,
    "n_test_pairs": 1000,
    "wrong_variables": ("c", "a", "b"),  # c first: the one bounded by construction
    "grid": True,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "full": _BASE,
    "quick": {**_BASE, "seeds": (0,), "steps": 1000, "grid": False, "k_sweep": ()},
    "smoke": {  # the test's setting: one model, the three main numbers
        **_BASE,
        "seeds": (0,),
        "steps": 1000,
        "das_steps": 200,
        "n_train_pairs": 512,
        "n_test_pairs": 512,
        "wrong_variables": ("c",),
        "grid": False,
        "k_sweep": (),
    },
}


# --------------------------------------------------------------- the high-level model


def latin_square(rng: np.random.Generator, n: int = N_DIGITS) -> np.ndarray:
    """A random Latin square `[n, n]`: T[i, j] = sigma((pi(i) + rho(j)) mod n)."""
    sigma, pi, rho = (rng.permutation(n) for _ in range(3))
    return sigma[(pi[:, None] + rho[None, :]) % n].astype(np.int32)


def tables(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T1, T2) of the task: s = T1[a, b], y = T2[s, c]."""
    rng = np.random.default_rng(seed)
    return latin_square(rng), latin_square(rng)


def causal_model(t1: np.ndarray, t2: np.ndarray) -> CausalModel:
    """Inputs a, b, c; s = T1[a, b]; output y = T2[s, c]."""
    return CausalModel(
        name=TASK,
        inputs=("a", "b", "c"),
        variables={
            "s": (("a", "b"), lambda a, b: int(t1[a, b])),
            "y": (("s", "c"), lambda s, c: int(t2[s, c])),
        },
        output="y",
    )


def _inputs(row: np.ndarray) -> dict[str, int]:
    return {"a": int(row[0]), "b": int(row[1]), "c": int(row[2])}


def _codes(base: np.ndarray, source: np.ndarray) -> np.ndarray:
    """One int per (base, source) pair of digit triples."""
    w = N_DIGITS ** np.arange(2 * SEQ_LEN)[::-1]
    return np.concatenate([base, source], axis=1).astype(np.int64) @ w


def counterfactual_pairs(
    cm: CausalModel,
    variable: str,
    n: int,
    seed: int,
    position: int = S_POS,
    exclude: CounterfactualData | None = None,
) -> CounterfactualData:
    """`n` interchange pairs for `variable`, intervened at token `position` of base and
    source (every prompt has the same 3 positions).

    Base and source inputs are uniform over the digit triples, kept where the variable's
    value differs between them (so the label always differs from the base's output) and
    where the pair is not one of `exclude`'s (held-out pairs). labels: the causal model's
    counterfactual output; info: the base and source inputs [n, 3] and `changes`.
    """
    cm.check_variable(variable)
    rng = np.random.default_rng(seed)
    banned = set() if exclude is None else set(_codes(*_pair_inputs(exclude)).tolist())
    base_rows, source_rows, labels, base_labels = [], [], [], []
    while len(labels) < n:
        for b, s in zip(*rng.integers(0, N_DIGITS, (2, 4 * n, SEQ_LEN))):
            if len(labels) == n:
                break
            bi, si = _inputs(b), _inputs(s)
            base_run = cm.run(bi)
            if base_run[variable] == cm.run(si)[variable]:
                continue
            if banned and int(_codes(b[None], s[None])[0]) in banned:
                continue
            base_rows.append(b)
            source_rows.append(s)
            labels.append(cm.counterfactual(bi, si, variable))
            base_labels.append(base_run[cm.output])
    base = np.asarray(base_rows, np.int32)
    source = np.asarray(source_rows, np.int32)
    labels_a = np.asarray(labels, np.int32)
    base_labels_a = np.asarray(base_labels, np.int32)
    pos = np.full((n, 1), position, np.int32)
    mask = np.ones((n, SEQ_LEN), bool)
    return CounterfactualData(
        base=base,
        source=source,
        base_mask=mask,
        source_mask=mask.copy(),
        base_positions=pos,
        source_positions=pos.copy(),
        labels=labels_a,
        base_labels=base_labels_a,
        variable=variable,
        task=cm.name,
        info={
            "base_inputs": base,
            "source_inputs": source,
            "changes": labels_a != base_labels_a,
        },
    )


def _pair_inputs(data: CounterfactualData) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(data.info["base_inputs"]), np.asarray(data.info["source_inputs"])


def at_position(data: CounterfactualData, position: int) -> CounterfactualData:
    """The same pairs intervened at another token position (base and source)."""
    pos = np.full((len(data), 1), position, np.int32)
    return dataclasses.replace(data, base_positions=pos, source_positions=pos.copy())


# -------------------------------------------------------------------------- the model


def model_config(settings: dict) -> toy.ToyConfig:
    d, h = settings["d_model"], settings["n_heads"]
    return toy.ToyConfig(
        n_layers=settings["n_layers"],
        d_model=d,
        n_heads=h,
        d_head=d // h,
        d_vocab=N_DIGITS,
        n_ctx=SEQ_LEN,
        d_mlp=4 * d,
    )


def _targets(tokens: Array, t1: Array, t2: Array) -> tuple[Array, Array]:
    s = t1[tokens[:, 0], tokens[:, 1]]
    return s, t2[s, tokens[:, 2]]


class _Programs(NamedTuple):
    loss_fn: Callable
    optimizer: optax.GradientTransformation
    step: Callable
    sample: Callable  # sample(key) -> tokens [batch, 3]
    accuracy: Callable  # accuracy(params) -> (acc_s, acc_y) over all 1000 inputs


@functools.lru_cache(maxsize=8)
def _programs(cfg: toy.ToyConfig, table_seed: int, opt_items: tuple) -> _Programs:
    """The jitted programs of a model, task and optimizer, built once per process."""
    o = dict(opt_items)
    t1, t2 = (jnp.asarray(t) for t in tables(table_seed))

    def loss_fn(params, tokens, key):
        del key
        logits = toy.forward(params, tokens, cfg)
        s, y = _targets(tokens, t1, t2)
        ce = optax.softmax_cross_entropy_with_integer_labels
        loss_s = ce(logits[:, S_POS], s).mean()
        loss_y = ce(logits[:, Y_POS], y).mean()
        return (loss_s + loss_y) / 2, {"loss_s": loss_s, "loss_y": loss_y}

    schedule = optax.warmup_cosine_decay_schedule(
        0.0, o["lr"], o["warmup"], max(o["steps"], o["warmup"] + 1)
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=o["weight_decay"])
    )

    @jax.jit
    def sample(key):
        return jax.random.randint(key, (o["batch"], SEQ_LEN), 0, N_DIGITS).astype(jnp.int32)

    every = jnp.asarray(np.indices((N_DIGITS,) * SEQ_LEN).reshape(SEQ_LEN, -1).T, jnp.int32)

    @jax.jit
    def accuracy(params):
        logits = toy.forward(params, every, cfg)
        s, y = _targets(every, t1, t2)
        return (
            (logits[:, S_POS].argmax(-1) == s).mean(),
            (logits[:, Y_POS].argmax(-1) == y).mean(),
        )

    step = training.make_train_step(loss_fn, optimizer)
    return _Programs(loss_fn, optimizer, step, sample, accuracy)


def train_model(settings: dict, seed: int) -> tuple[Model, dict]:
    """Train the toy model of `settings` with model seed `seed`: (the model as a
    `mechjax.Model` of the toy family, {"acc_s", "acc_y", "final_loss", "seconds"})."""
    t0 = time.time()
    s = {**SETTINGS["full"], **settings}
    cfg = model_config(s)
    opt_items = tuple((k, s[k]) for k in ("lr", "warmup", "steps", "weight_decay", "batch"))
    prog = _programs(cfg, s["table_seed"], opt_items)
    init = toy.init(jax.random.fold_in(jax.random.PRNGKey(seed), 1), cfg)
    res = training.train(
        prog.loss_fn,
        prog.optimizer,
        init,
        lambda key, step: prog.sample(key),
        steps=s["steps"],
        seed=seed,
        progress=False,
        step_fn=prog.step,
    )
    params = res.state.params
    acc_s, acc_y = (float(v) for v in prog.accuracy(params))
    tail = res.history[-50:]
    info = {
        "acc_s": acc_s,
        "acc_y": acc_y,
        "final_loss": float(np.mean([r["loss"] for r in tail])) if tail else float("nan"),
        "seconds": round(time.time() - t0, 1),
    }
    return Model(params, cfg, family_of_module("toy")), info


# ------------------------------------------------------------------------------ DAS


def _das(
    model: Model,
    train: CounterfactualData,
    test: CounterfactualData,
    layer: int,
    k: int,
    config: das.TrainConfig,
    key: Array,
) -> dict:
    """Train a k-dim rotation at `resid_pre` of `layer`; IIA on `test`."""
    feat = F.rotation(key, model.config.d_model, k)
    trained = das.train(model, train, feat, layer=layer, config=config)
    losses = np.asarray(trained.losses)
    return {
        "iia": das.iia(model, test, trained.featurizer, layer=layer),
        "final_train_loss": float(losses[-20:].mean()) if losses.size else float("nan"),
    }


def _one_seed(s: dict, seed: int, log: Callable[[str], None]) -> dict:
    t0 = time.time()
    cm = causal_model(*tables(s["table_seed"]))
    model, fit = train_model(s, seed)
    log(
        f"seed {seed}: trained in {fit['seconds']}s, accuracy s {fit['acc_s']:.3f}, "
        f"y {fit['acc_y']:.3f}"
    )
    k, d = s["das_k"], model.config.d_model
    config = das.TrainConfig(
        steps=s["das_steps"], batch_size=s["das_batch"], lr=s["das_lr"], seed=seed
    )
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
    variables = ("s", *s["wrong_variables"])
    train_pairs, test_pairs = {}, {}
    for i, v in enumerate(variables):
        ps = s["pairs_seed"] * 1000 + 10 * i
        train_pairs[v] = counterfactual_pairs(cm, v, s["n_train_pairs"], ps)
        test_pairs[v] = counterfactual_pairs(
            cm, v, s["n_test_pairs"], ps + 1, exclude=train_pairs[v]
        )

    def site(v: str, pos: str, layer: int = RIGHT_LAYER) -> dict:
        p = POSITIONS[pos]
        out = _das(
            model,
            at_position(train_pairs[v], p),
            at_position(test_pairs[v], p),
            layer,
            k,
            config,
            key,
        )
        log(f"  DAS k={k} for {v} at {pos}, resid_pre {layer}: IIA {out['iia']:.3f}")
        return out

    right = site("s", "b")
    wrong_site = site("s", "a")
    wrong_vars = {v: site(v, "b") for v in s["wrong_variables"]}
    right_test = test_pairs["s"]  # intervened at b
    ceiling = das.iia(model, right_test, F.identity(d), layer=RIGHT_LAYER)
    floor = das.iia(model, right_test, F.rotation(key, d, k), layer=RIGHT_LAYER)
    log(f"  identity at the right site {ceiling:.3f}, untrained rotation {floor:.3f}")
    out: dict[str, Any] = {
        "seed": seed,
        **{f"model_{k_}": v for k_, v in fit.items()},
        "iia_right_site": right["iia"],
        "iia_wrong_site": wrong_site["iia"],
        "iia_wrong_variable": wrong_vars[s["wrong_variables"][0]]["iia"],
        "iia_wrong_variables": {v: r["iia"] for v, r in wrong_vars.items()},
        "iia_identity_right_site": ceiling,
        "iia_random_rotation_right_site": floor,
        "das_train_loss_right_site": right["final_train_loss"],
    }
    if s["k_sweep"]:
        sweep = {}
        for kk in s["k_sweep"]:
            r = _das(model, train_pairs["s"], test_pairs["s"], RIGHT_LAYER, kk, config, key)
            sweep[str(kk)] = r["iia"]
        sweep[str(k)] = right["iia"]
        log("  IIA at the right site by k: " + ", ".join(f"{a} {v:.3f}" for a, v in sweep.items()))
        out["iia_right_site_by_k"] = sweep
    if s["grid"]:
        grid = {}
        for pos, p in POSITIONS.items():
            res = das.search(
                model,
                at_position(train_pairs["s"], p),
                at_position(test_pairs["s"], p),
                lambda kk: F.rotation(kk, d, k),
                list(range(model.config.n_layers)),
                config=config,
            )
            grid[pos] = res["iia"]
        cells = (f"{p} [{', '.join(f'{x:.3f}' for x in v)}]" for p, v in grid.items())
        log("  grid (s, position x layer): " + ", ".join(cells))
        out["iia_grid"] = grid
    out["seconds"] = round(time.time() - t0, 1)
    return out


_KEYS = (
    "iia_right_site",
    "iia_wrong_site",
    "iia_wrong_variable",
    "iia_identity_right_site",
    "iia_random_rotation_right_site",
    "model_acc_s",
    "model_acc_y",
)


def run(settings: dict, log: Callable[[str], None] = print) -> dict:
    """Train a toy model per seed of `settings` (missing keys: `SETTINGS["full"]`) and run
    DAS at the right site, the wrong site, for the wrong variables, with the identity
    ceiling and the untrained-rotation floor (and the position x layer grid if
    `settings["grid"]`).

    Returns (plain JSON types) the mean over seeds of `iia_right_site`, `iia_wrong_site`,
    `iia_wrong_variable` (variable `wrong_variables[0]`, c by default, at b),
    `iia_identity_right_site`, `iia_random_rotation_right_site`, `model_acc_s`,
    `model_acc_y`; `min` and `max` of the same over seeds; `per_seed` (each seed's
    numbers, `iia_wrong_variables` by variable, `iia_grid` {position: IIA per layer},
    training seconds); `chance` (1/9), `das_k`, `das_steps`, `settings`, `seconds`.
    """
    t0 = time.time()
    s = {**SETTINGS["full"], **settings}
    per_seed = [_one_seed(s, int(seed), log) for seed in s["seeds"]]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in per_seed])) for k in _KEYS}
    out["min"] = {k: float(min(r[k] for r in per_seed)) for k in _KEYS}
    out["max"] = {k: float(max(r[k] for r in per_seed)) for k in _KEYS}
    out.update(
        {
            "per_seed": per_seed,
            "chance": CHANCE,
            "das_k": s["das_k"],
            "das_steps": s["das_steps"],
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
            "seconds": round(time.time() - t0, 1),
        }
    )
    return out


def _main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - manual runs
    import argparse
    import json

    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--setting", default="quick", choices=sorted(SETTINGS))
    p.add_argument("--out", default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    res = run(SETTINGS[a.setting])
    text = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":  # pragma: no cover
    _main()
