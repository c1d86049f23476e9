"""Memory per device of real model shapes under each sharding, from `jax.eval_shape`.

    python scripts/memory_table.py             # the table (no devices needed, no weights)
    python scripts/memory_table.py --measure   # measured on 8 virtual CPU devices

The table: parameter shapes come from `jax.eval_shape` over the family's `param_shapes`
(nothing is allocated), Adam's state from `jax.eval_shape(optax.adam(...).init, params)`, and each
leaf's per-device shard from `mechjax.sharding`'s rules and the mesh axis sizes, exactly
as `shard_model` / `shard_state` would place it. Training state = params + gradients
(sharded like params) + Adam's two moments (ZeRO-1: also split over `data`).
Activations are not included: they scale with batch x pos per device (see docs).

`--measure` places a small Llama on 8 virtual devices under several meshes and reports
the bytes actually held by device 0, next to the eval_shape prediction, plus the
compiled forward's temporary memory and run time per device (XLA's memory analysis).
"""

from __future__ import annotations

import argparse
import os
import re
import sys


def model_shapes():
    from mechjax.models.llama import Config

    return {
        "SmolLM2-135M": (
            Config(
                d_model=576,
                n_layers=30,
                n_heads=9,
                n_kv_heads=3,
                d_head=64,
                d_mlp=1536,
                d_vocab=49152,
                tie_embeddings=True,
            ),
            "",
        ),
        "Gemma 3 270M*": (
            Config(
                d_model=640,
                n_layers=18,
                n_heads=4,
                n_kv_heads=1,
                d_head=256,
                d_mlp=2048,
                d_vocab=262144,
                tie_embeddings=True,
                act="gelu",
            ),
            "Llama-shaped approximation (no gemma3 module yet): the extra "
            "q/k norms and post-norms of Gemma 3 add < 0.1 MiB",
        ),
        "Llama 7B shape": (
            Config(
                d_model=4096,
                n_layers=32,
                n_heads=32,
                n_kv_heads=32,
                d_head=128,
                d_mlp=11008,
                d_vocab=32000,
            ),
            "",
        ),
    }


# name, mesh axis sizes, which logical axes to keep whole (replicated)
SHARDINGS = [
    ("1 device", {}, ()),
    ("data=8 (DP)", {"data": 8}, ()),
    ("model=2 (TP)", {"model": 2}, ()),
    ("model=3 (TP)", {"model": 3}, ()),
    ("model=4 (TP)", {"model": 4}, ()),
    ("model=8 (TP)", {"model": 8}, ()),
    ("model=4, kv heads whole", {"model": 4}, ("kv_heads",)),
    ("model=8, attention whole", {"model": 8}, ("heads", "kv_heads")),
    ("data=4 x model=2", {"data": 4, "model": 2}, ()),
    ("data=32 x model=8 (256 chips)", {"data": 32, "model": 8}, ()),
]

MiB = 2**20


def abstract_params(family_module, cfg, dtype="float32"):
    """`jax.eval_shape` of the family's params: shapes and dtypes, nothing allocated.

    Built from the family's `param_shapes` (its `init` draws on the host, so it cannot be
    traced by `eval_shape`).
    """
    import jax
    import jax.numpy as jnp

    shapes = family_module.param_shapes(cfg)
    return jax.eval_shape(
        lambda: jax.tree.map(
            lambda s: jnp.zeros(s, dtype), shapes, is_leaf=lambda x: isinstance(x, tuple)
        )
    )


def table() -> str:
    import jax
    import jax.numpy as jnp
    import optax

    from mechjax import sharding
    from mechjax.models import llama
    from mechjax.training import TrainState

    shapes = model_shapes()
    cells: dict = {}
    heads = []
    notes = []
    for name, (cfg, note) in shapes.items():
        params = abstract_params(llama, cfg)
        n = sum(x.size for x in jax.tree.leaves(params))
        heads.append(f"{name} ({n / 1e6:.0f}M)")
        opt = jax.eval_shape(optax.adam(1e-3).init, params)
        state = TrainState(
            params, opt, jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((2,), jnp.uint32)
        )
        if note:
            notes.append(f"* {name}: {note}.")
        for label, sizes, whole in SHARDINGS:
            rules = sharding.replicate(sharding.DEFAULT_RULES, *whole)
            try:
                specs = sharding.mesh_specs(params, rules, sizes)
            except sharding.ShardingError as e:
                bad = sorted(set(re.findall(r"\('(\w+)'\) has size (\d+)", str(e))))
                cells[label, name] = "n/a: " + ", ".join(f"{a}={k}" for a, k in bad)
                continue
            p32 = sharding.per_device_bytes(params, specs, sizes)
            st = sharding.per_device_bytes(state, sharding.state_specs(state, rules, sizes), sizes)
            cells[label, name] = f"{p32 / MiB:,.0f} / {(st + p32) / MiB:,.0f}"
    rows = ["| sharding | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for label, _, _ in SHARDINGS:
        rows.append(f"| {label} | " + " | ".join(cells[label, m] for m in shapes) + " |")
    notes.append(
        "* Cells: params / training state, MiB per device, float32. Training state = "
        "params + gradients + Adam's two moments (ZeRO-1 over `data`). bfloat16 "
        "params take half. `n/a`: the mesh axis does not divide the listed "
        "dimensions under the rules of that row."
    )
    notes.append(
        "* Parameter counts include `W_U` even for tied embeddings: mechjax stores "
        "it, as TransformerLens does."
    )
    return "\n".join(rows + [""] + notes)


def measure() -> str:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    import mechjax as mj
    from mechjax import sharding
    from mechjax.io.families import family_of_module
    from mechjax.models import llama
    from mechjax.models.llama import Config

    fam = family_of_module("llama")
    cfg = Config(
        d_model=256,
        n_layers=4,
        n_heads=8,
        n_kv_heads=8,
        d_head=32,
        d_mlp=1024,
        d_vocab=8192,
        n_ctx=256,
    )
    model = mj.Model(fam.init(jax.random.PRNGKey(0), cfg), cfg, fam)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.d_vocab, (8, 128)), jnp.int32)
    abstract = abstract_params(llama, cfg)
    forward = jax.jit(mj.run)
    rows = [
        f"Llama d_model={cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"{cfg.n_kv_heads} kv heads, d_mlp={cfg.d_mlp}, vocab={cfg.d_vocab}; "
        f"tokens [8, 128]; {jax.device_count()} virtual CPU devices on "
        f"{os.cpu_count()} cores",
        "| mesh (data x sweep x model) | params on device 0 (measured) | eval_shape "
        "prediction | forward temp memory per device | forward time |",
        "|---|---:|---:|---:|---:|",
    ]
    for data, model_ax in [(1, 1), (8, 1), (1, 8), (4, 2), (2, 4)]:
        devices = jax.devices()[: data * model_ax]
        mesh = sharding.make_mesh(data=data, model=model_ax, devices=devices)
        m = sharding.shard_model(model, mesh)
        toks = sharding.shard_batch(tokens, mesh)
        held = sum(
            s.data.nbytes
            for x in jax.tree.leaves(m.params)
            for s in x.addressable_shards
            if s.device == devices[0]
        )
        sizes = dict(mesh.shape)
        predicted = sharding.per_device_bytes(
            abstract, sharding.mesh_specs(abstract, sharding.DEFAULT_RULES, sizes), sizes
        )
        temp = forward.lower(m, toks).compile().memory_analysis().temp_size_in_bytes
        forward(m, toks).logits.block_until_ready()
        t = time.perf_counter()
        for _ in range(3):
            forward(m, toks).logits.block_until_ready()
        secs = (time.perf_counter() - t) / 3
        rows.append(
            f"| {data} x 1 x {model_ax} | {held / MiB:.2f} MiB | {predicted / MiB:.2f} MiB "
            f"| {temp / MiB:.1f} MiB | {secs * 1e3:.0f} ms |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--measure", action="store_true", help="measure placement on 8 virtual CPU devices instead"
    )
    args = parser.parse_args()
    if args.measure:
        if "jax" in sys.modules:
            raise SystemExit("--measure must set XLA_FLAGS before JAX starts")
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
        )
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        print(measure())
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
